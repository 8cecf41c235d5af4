//! CEF: one alert event as one ArcSight Common Event Format line (CEF
//! version 0), for syslog-based SIEMs.
//!
//! ```text
//! CEF:0|Vigil|Vigil|<version>|<rule>|<summary>|<severity 0-10>|rt=... externalId=... ...
//! ```
//!
//! Escaping follows the CEF specification: in the header, `\` becomes
//! `\\` and `|` becomes `\|` (a header cannot hold a line break: CR and LF
//! become spaces); in extension values, `\` becomes `\\`, `=` becomes
//! `\=`, LF becomes `\n` and CR becomes `\r` (pipes are not escaped
//! there). Extension keys are fixed names from the CEF dictionary, in a
//! fixed order; keys without a value are left out. The mapping of every
//! key is in `docs/siem.md`.
//!
//! A security event (`vigil export --dataset security_events`) is a line
//! of the same shape whose Device Event Class ID is its kind
//! (`login_failure`, ...) and whose name is its summary; see
//! [`security_extension`].

use vigil_ops::model::{AlertEvent, Severity};
use vigil_ops::SecurityEventRow;
use vigil_proto::v1::SecurityEventKind;

use super::security::{self as sec, opt};
use super::{finite, Encoding, PRODUCT, PRODUCT_VERSION, VENDOR};

/// The CEF encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cef;

impl Encoding for Cef {
    fn name(&self) -> &'static str {
        "cef"
    }

    fn content_type(&self) -> &'static str {
        "text/plain; charset=utf-8"
    }

    fn file_extension(&self) -> &'static str {
        "cef"
    }

    fn encode(&self, a: &AlertEvent, out: &mut Vec<u8>) {
        out.extend_from_slice(line(a).as_bytes());
    }

    fn encode_security_event(&self, e: &SecurityEventRow, out: &mut Vec<u8>) {
        out.extend_from_slice(security_line(e).as_bytes());
    }
}

/// CEF severity (0-10) of a Vigil severity: info 1 (Low, 0-3), warning 5
/// (Medium, 4-6), critical 9 (Very-High, 9-10).
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Warning => 5,
        Severity::Critical => 9,
    }
}

/// Appends `s` escaped for a CEF header field.
pub fn escape_header(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends `s` escaped for a CEF extension value.
pub fn escape_value(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// The extension's key-value pairs, in order (values unescaped).
pub fn extension(a: &AlertEvent) -> Vec<(&'static str, String)> {
    let mut e: Vec<(&'static str, String)> = Vec::with_capacity(32);
    e.push(("rt", a.event_time_ms.to_string()));
    e.push(("start", a.started_at_ms.to_string()));
    if let Some(end) = a.resolved_at_ms {
        e.push(("end", end.to_string()));
    }
    e.push(("externalId", a.id.clone()));
    e.push(("act", a.status.as_str().into()));
    e.push(("cat", a.kind.as_str().into()));
    e.push(("msg", a.summary.clone()));
    if let Some(h) = &a.hostname {
        e.push(("shost", h.clone()));
    }
    if let Some(r) = a.resolve_reason {
        e.push(("reason", r.as_str().into()));
    }
    e.push(("cs1Label", "tenant".into()));
    e.push(("cs1", a.tenant.clone()));
    e.push(("cs2Label", "agent".into()));
    e.push(("cs2", a.agent.clone()));
    if let Some(m) = &a.metric {
        e.push(("cs3Label", "metric".into()));
        e.push(("cs3", m.clone()));
    }
    if !a.labels.is_empty() {
        e.push(("cs4Label", "labels".into()));
        e.push(("cs4", a.labels.clone()));
    }
    e.push(("cs5Label", "rule".into()));
    e.push(("cs5", a.rule.clone()));
    e.push(("cs6Label", "fingerprint".into()));
    e.push(("cs6", a.fingerprint.clone()));
    if let Some(v) = finite(a.value) {
        e.push(("cfp1Label", "value".into()));
        e.push(("cfp1", v.to_string()));
    }
    if let Some(t) = finite(a.threshold) {
        e.push(("cfp2Label", "threshold".into()));
        e.push(("cfp2", t.to_string()));
    }
    if let Some(f) = a.flaps {
        e.push(("cn1Label", "flaps".into()));
        e.push(("cn1", f.to_string()));
    }
    if let Some(p) = a.predicted_at_ms {
        e.push(("deviceCustomDate1Label", "predictedAt".into()));
        e.push(("deviceCustomDate1", p.to_string()));
    }
    e.push(("flexString1Label", "suppressed".into()));
    e.push(("flexString1", a.suppressed.to_string()));
    e
}

/// The extension of a security event, in order (values unescaped):
/// `rt` (event time), `cat` (`security`), `act` (the kind), `outcome`
/// (logins: `success` or `failure`), `msg` (the summary), `dhost` (the
/// agent's hostname: the host the event happened on), `duser` (the
/// account: logins and privilege changes), `suser` (who acted: the
/// technician of a session, the actor of a privilege change), `src` (a
/// login's source IP address) or `shost` (its source host name),
/// `cs1` tenant, `cs2` agent, `cs3` session id, `cs4` privilege,
/// `flexString1` granted (`true`/`false`).
pub fn security_extension(e: &SecurityEventRow) -> Vec<(&'static str, String)> {
    let ev = &e.event;
    let mut x: Vec<(&'static str, String)> = Vec::with_capacity(24);
    x.push(("rt", ev.timestamp_ms.to_string()));
    x.push(("cat", "security".into()));
    x.push(("act", sec::kind_str(e).into()));
    if let Some(o) = sec::login_outcome(e) {
        x.push(("outcome", o.into()));
    }
    x.push(("msg", sec::summary(e)));
    if let Some(h) = &e.hostname {
        x.push(("dhost", h.clone()));
    }
    let kind = sec::kind(e);
    let session = matches!(
        kind,
        SecurityEventKind::RemoteSessionStart | SecurityEventKind::RemoteSessionEnd
    );
    if let Some(u) = opt(&ev.user) {
        x.push(("duser", u.into()));
    }
    if let Some(s) = opt(if session { &ev.technician } else { &ev.actor }) {
        x.push(("suser", s.into()));
    }
    if let Some(src) = opt(&ev.source_address) {
        let key = if sec::is_ip(src) { "src" } else { "shost" };
        x.push((key, src.into()));
    }
    x.push(("cs1Label", "tenant".into()));
    x.push(("cs1", e.tenant.clone()));
    x.push(("cs2Label", "agent".into()));
    x.push(("cs2", e.agent.clone()));
    if let Some(id) = opt(&ev.session_id) {
        x.push(("cs3Label", "session".into()));
        x.push(("cs3", id.into()));
    }
    if let Some(p) = opt(&ev.privilege) {
        x.push(("cs4Label", "privilege".into()));
        x.push(("cs4", p.into()));
    }
    if kind == SecurityEventKind::PrivilegeChange {
        x.push(("flexString1Label", "granted".into()));
        x.push(("flexString1", ev.granted.to_string()));
    }
    x
}

/// A CEF line from its signature id, name, severity and extension.
fn assemble(signature: &str, name: &str, sev: Severity, ext: &[(&str, String)]) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("CEF:0|");
    for field in [VENDOR, PRODUCT, PRODUCT_VERSION, signature, name] {
        escape_header(field, &mut s);
        s.push('|');
    }
    s.push_str(&severity(sev).to_string());
    s.push('|');
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(k);
        s.push('=');
        escape_value(v, &mut s);
    }
    s
}

/// The whole CEF line of `a` (no trailing newline).
pub fn line(a: &AlertEvent) -> String {
    assemble(&a.rule, &a.summary, a.severity, &extension(a))
}

/// The whole CEF line of a security event (no trailing newline): Device
/// Event Class ID the kind, name the summary, severity from
/// [`sec::severity`].
pub fn security_line(e: &SecurityEventRow) -> String {
    assemble(
        sec::kind_str(e),
        &sec::summary(e),
        sec::severity(e),
        &security_extension(e),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, offline, resolved};
    use proptest::prelude::*;

    /// A reader of the CEF syntax, written from the specification for
    /// these tests: the header split on unescaped pipes, the extension on
    /// the last space before each unescaped `=`.
    fn parse(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let body = line.strip_prefix("CEF:").expect("CEF prefix");
        let mut header = Vec::new();
        let mut cur = String::new();
        let mut chars = body.chars();
        while header.len() < 7 {
            match chars.next().expect("header ends early") {
                '\\' => cur.push(chars.next().expect("dangling escape")),
                '|' => header.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        let rest: String = chars.collect();
        // Tokens: unescape values, split keys at unescaped '='.
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut buf = String::new();
        let mut chars = rest.chars();
        let mut key: Option<String> = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next().expect("dangling escape") {
                    'n' => buf.push('\n'),
                    'r' => buf.push('\r'),
                    c => buf.push(c),
                },
                '=' => {
                    // The key is the word after the last space.
                    let (value, k) = match buf.rfind(' ') {
                        Some(i) => (buf[..i].to_string(), buf[i + 1..].to_string()),
                        None => (String::new(), buf.clone()),
                    };
                    if let Some(prev) = key.take() {
                        pairs.push((prev, value));
                    }
                    key = Some(k);
                    buf.clear();
                }
                c => buf.push(c),
            }
        }
        if let Some(prev) = key {
            pairs.push((prev, buf));
        }
        (header, pairs)
    }

    fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn header_escapes_every_special_character() {
        let cases = [
            ("a|b", "a\\|b"),
            ("a\\b", "a\\\\b"),
            ("a=b", "a=b"),
            ("a\nb", "a b"),
            ("a\rb", "a b"),
            ("\\|", "\\\\\\|"),
            ("ünï|", "ünï\\|"),
        ];
        for (raw, want) in cases {
            let mut s = String::new();
            escape_header(raw, &mut s);
            assert_eq!(s, want, "{raw:?}");
        }
    }

    #[test]
    fn extension_escapes_every_special_character() {
        let cases = [
            ("a=b", "a\\=b"),
            ("a\\b", "a\\\\b"),
            ("a|b", "a|b"),
            ("a\nb", "a\\nb"),
            ("a\rb", "a\\rb"),
            ("\\=", "\\\\\\="),
            ("x = y", "x \\= y"),
        ];
        for (raw, want) in cases {
            let mut s = String::new();
            escape_value(raw, &mut s);
            assert_eq!(s, want, "{raw:?}");
        }
    }

    #[test]
    fn severity_mapping_is_exhaustive_in_range_and_increasing() {
        let all = [Severity::Info, Severity::Warning, Severity::Critical];
        let v: Vec<u8> = all.iter().map(|s| severity(*s)).collect();
        assert_eq!(v, [1, 5, 9]);
        for s in all {
            let mut a = firing();
            a.severity = s;
            let (h, _) = parse(&line(&a));
            assert_eq!(h[6], severity(s).to_string());
        }
    }

    #[test]
    fn a_firing_event_reads_back() {
        let a = firing();
        let l = line(&a);
        assert!(l.starts_with("CEF:0|Vigil|Vigil|"), "{l}");
        let (h, e) = parse(&l);
        assert_eq!(h[0], "0");
        assert_eq!(h[4], "disk_high");
        assert_eq!(h[5], a.summary);
        assert_eq!(get(&e, "rt"), Some("1793664000000"));
        assert_eq!(get(&e, "externalId"), Some(a.id.as_str()));
        assert_eq!(get(&e, "act"), Some("firing"));
        assert_eq!(get(&e, "shost"), Some("db-1.acme.example"));
        assert_eq!(get(&e, "cs1Label"), Some("tenant"));
        assert_eq!(get(&e, "cs1"), Some("acme"));
        assert_eq!(get(&e, "cs4"), Some("mount=/data"));
        assert_eq!(get(&e, "cfp1"), Some("93.5"));
        assert_eq!(get(&e, "end"), None);
        let (_, e) = parse(&line(&resolved()));
        assert_eq!(get(&e, "end"), Some("1793667600000"));
        assert_eq!(get(&e, "reason"), Some("cleared"));
        assert_eq!(get(&e, "cn1"), Some("2"));
        let (_, e) = parse(&line(&offline()));
        assert_eq!(get(&e, "cs3"), None);
        assert_eq!(get(&e, "shost"), None);
    }

    #[test]
    fn security_events_read_back() {
        let rows = crate::encoding::security::testing::every_kind();
        let lines: Vec<_> = rows.iter().map(|e| parse(&security_line(e))).collect();
        let (h, e) = &lines[0];
        assert_eq!(h[4], "login_failure");
        assert_eq!(h[5], sec::summary(&rows[0]));
        assert_eq!(h[6], "5");
        assert_eq!(get(e, "rt"), Some("1793664001234"));
        assert_eq!(get(e, "outcome"), Some("failure"));
        assert_eq!(get(e, "duser"), Some("root"));
        assert_eq!(get(e, "src"), Some("203.0.113.50"));
        assert_eq!(get(e, "dhost"), Some("db-1.acme.example"));
        assert_eq!(get(e, "cs1"), Some("acme"));
        assert_eq!(get(e, "cs2"), Some("agent-7"));
        let (h, e) = &lines[1];
        assert_eq!((h[6].as_str(), get(e, "outcome")), ("1", Some("success")));
        assert_eq!(get(e, "shost"), Some("laptop-3.acme.example"));
        assert_eq!(get(e, "src"), None);
        let (_, e) = &lines[2];
        assert_eq!(get(e, "suser"), Some("tech.ana"));
        assert_eq!(get(e, "cs3"), Some("s-42"));
        assert_eq!((get(e, "duser"), get(e, "outcome")), (None, None));
        let (_, e) = &lines[4];
        assert_eq!(get(e, "suser"), Some("admin"));
        assert_eq!(get(e, "cs4"), Some("Administrators"));
        assert_eq!(get(e, "flexString1"), Some("true"));
        let (_, e) = &lines[5];
        assert_eq!(
            (get(e, "suser"), get(e, "flexString1")),
            (None, Some("false"))
        );
    }

    proptest! {
        #[test]
        fn any_text_reads_back_unchanged(
            rule in "\\PC*",
            summary in "[a-z|\\\\= \\n\\r\u{e9}\u{1F600}-]*",
            tenant in "\\PC*",
            host in "[a-z|\\\\= \\n\\r\u{e9}-]*",
            labels in "\\PC*",
        ) {
            let mut a = firing();
            a.rule = rule.clone();
            a.summary = summary.clone();
            a.tenant = tenant.clone();
            a.hostname = Some(host.clone());
            a.labels = labels.clone();
            let l = line(&a);
            prop_assert!(!l.contains('\n') && !l.contains('\r'));
            let (h, e) = parse(&l);
            let header = |s: &str| s.replace(['\n', '\r'], " ");
            prop_assert_eq!(&h[4], &header(&rule));
            prop_assert_eq!(&h[5], &header(&summary));
            prop_assert_eq!(get(&e, "msg"), Some(summary.as_str()));
            prop_assert_eq!(get(&e, "cs1"), Some(tenant.as_str()));
            prop_assert_eq!(get(&e, "shost"), Some(host.as_str()));
            prop_assert_eq!(get(&e, "cs5"), Some(rule.as_str()));
            let want_labels = (!labels.is_empty()).then_some(labels.as_str());
            prop_assert_eq!(get(&e, "cs4"), want_labels);
        }
    }
}
