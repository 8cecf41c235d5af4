//! Alert encodings: how one [`AlertEvent`] becomes the bytes of one record
//! on a destination (a Kafka message, a line of a file, a syslog message);
//! and how one security event ([`SecurityEventRow`], exported by `vigil
//! export --dataset security_events`) does, in the same four formats
//! (what they share of a security event: [`security`]).
//!
//! Each encoding is one file implementing [`Encoding`] and one line in
//! [`ENCODINGS`]; routes choose theirs by [`Encoding::name`]
//! ([`encoding`]). The field mapping of each is documented in
//! `docs/siem.md`.
//!
//! | name   | what                                                   |
//! |--------|--------------------------------------------------------|
//! | `json` | Vigil's own JSON (`schemas/alert.v1.schema.json`)      |
//! | `ocsf` | OCSF Detection Finding (class 2004), JSON              |
//! | `cef`  | ArcSight Common Event Format, one line                 |
//! | `ecs`  | Elastic Common Schema document, JSON                   |
//!
//! Encoders never fail: every alert event and security event has an
//! encoding in each format (non-finite numbers are left out, text is
//! escaped).

use vigil_ops::model::AlertEvent;
use vigil_ops::SecurityEventRow;

pub mod cef;
pub mod ecs;
pub mod json;
pub mod ocsf;
pub mod security;

/// One alert encoding.
pub trait Encoding: Send + Sync {
    /// Name used in configuration (`encoding = "ocsf"`) and on the command
    /// line.
    fn name(&self) -> &'static str;

    /// Media type of one encoded event.
    fn content_type(&self) -> &'static str;

    /// Extension of a file holding one encoded event per line.
    fn file_extension(&self) -> &'static str;

    /// Appends the encoding of `a` to `out` (one record, no trailing
    /// newline; a newline never occurs inside it).
    fn encode(&self, a: &AlertEvent, out: &mut Vec<u8>);

    /// Appends the encoding of the security event `e` to `out`, as
    /// [`Encoding::encode`] does for an alert event.
    fn encode_security_event(&self, e: &SecurityEventRow, out: &mut Vec<u8>);
}

/// Every encoding, by name: the registry.
pub static ENCODINGS: &[&dyn Encoding] = &[&json::Json, &ocsf::Ocsf, &cef::Cef, &ecs::Ecs];

/// The encoding named `name`.
pub fn encoding(name: &str) -> Option<&'static dyn Encoding> {
    ENCODINGS.iter().copied().find(|e| e.name() == name)
}

/// Names of every encoding, for error messages.
pub fn encoding_names() -> Vec<&'static str> {
    ENCODINGS.iter().map(|e| e.name()).collect()
}

/// Name and version of the product as the encodings report it.
pub const PRODUCT: &str = "Vigil";
/// Vendor as the encodings report it.
pub const VENDOR: &str = "Vigil";
/// Version of the product as the encodings report it.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Finite values only: JSON has no NaN or infinity.
pub(crate) fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

#[cfg(test)]
pub(crate) mod testing {
    use vigil_ops::model::{AlertEvent, AlertStatus, DetectorKind, ResolveReason, Severity};

    /// A firing threshold alert with labels and a hostname.
    pub fn firing() -> AlertEvent {
        AlertEvent {
            id: "0123456789abcdef0123456789abcdef".into(),
            fingerprint: "0123456789abcdef".into(),
            rule: "disk_high".into(),
            kind: DetectorKind::Threshold,
            severity: Severity::Warning,
            status: AlertStatus::Firing,
            suppressed: false,
            tenant: "acme".into(),
            agent: "agent-7".into(),
            hostname: Some("db-1.acme.example".into()),
            metric: Some("disk_used_pct".into()),
            labels: "mount=/data".into(),
            value: Some(93.5),
            threshold: Some(90.0),
            predicted_at_ms: None,
            window_start_ms: Some(1_793_664_000_000),
            window_end_ms: Some(1_793_664_060_000),
            started_at_ms: 1_793_664_000_000,
            resolved_at_ms: None,
            resolve_reason: None,
            flaps: None,
            event_time_ms: 1_793_664_000_000,
            summary: "disk_used_pct 93.5 > 90 on db-1 (/data)".into(),
        }
    }

    /// The same incident, resolved.
    pub fn resolved() -> AlertEvent {
        AlertEvent {
            status: AlertStatus::Resolved,
            resolved_at_ms: Some(1_793_667_600_000),
            resolve_reason: Some(ResolveReason::Cleared),
            flaps: Some(2),
            event_time_ms: 1_793_667_600_000,
            value: Some(71.0),
            ..firing()
        }
    }

    /// An offline alert: no metric, labels, value or hostname.
    pub fn offline() -> AlertEvent {
        AlertEvent {
            rule: "agent_offline".into(),
            kind: DetectorKind::Offline,
            severity: Severity::Critical,
            hostname: None,
            metric: None,
            labels: String::new(),
            value: None,
            threshold: None,
            window_start_ms: None,
            window_end_ms: None,
            summary: "agent-7 silent for 5m".into(),
            ..firing()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_found() {
        let names = encoding_names();
        assert_eq!(names, ["json", "ocsf", "cef", "ecs"]);
        for n in &names {
            assert_eq!(encoding(n).map(|e| e.name()), Some(*n));
        }
        assert!(encoding("xml").is_none());
    }

    #[test]
    fn no_encoding_writes_a_newline() {
        let mut a = testing::firing();
        a.summary = "line one\nline two\r\n".into();
        a.rule = "r\nx".into();
        a.tenant = "t\n".into();
        a.labels = "k=v\nw".into();
        let mut events = security::testing::every_kind();
        for ev in &mut events {
            ev.tenant = "t\n".into();
            ev.hostname = Some("h\r\nx".into());
            ev.event.user = "u\nv".into();
            ev.event.technician = "t\r".into();
        }
        for e in ENCODINGS {
            let mut out = Vec::new();
            e.encode(&a, &mut out);
            let mut outs = vec![out];
            for ev in &events {
                let mut out = Vec::new();
                e.encode_security_event(ev, &mut out);
                outs.push(out);
            }
            for out in outs {
                assert!(!out.is_empty(), "{}", e.name());
                assert!(
                    !out.contains(&b'\n') && !out.contains(&b'\r'),
                    "{}",
                    e.name()
                );
            }
        }
    }
}
