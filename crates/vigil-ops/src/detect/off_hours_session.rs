//! Remote sessions outside business hours: a remote-control session that
//! starts outside the tenant's business hours, in the tenant's time zone.
//!
//! A report family (see [`super::registry`]) on security events. A rule
//! has a default schedule (`time_zone`, `days`, `start`, `end`) and
//! per-tenant overrides (`tenants.<id>`). A session is judged by its
//! start: business hours are `[start, end)` local time on `days` (a
//! session at `start` exactly is inside, at `end` exactly outside). An
//! off-hours session fires an incident (labels `session=<id>,
//! technician=<name>`) at its start and resolves at its end event. Only
//! off-hours sessions are kept, at most `max_open` per agent and rule;
//! one more closes the oldest as `stale` (an end event lost). Local time
//! comes from the IANA time zone database compiled into the binary
//! (`chrono-tz`), so daylight-saving changes are followed.

use chrono::{Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vigil_proto::v1::{SecurityEvent, SecurityEventKind};

use super::registry::{FamilyRule, ReportCx, ReportFamily, ReportRule, RuleSet};
use super::security::{self, Tracked};
use crate::model::{AlertEvent, AlertStatus, ResolveReason, Severity};
use crate::rules::calendar::{parse_hhmm, weekday_named};
use crate::rules::read::{Cx, Val};
use toml::de::{DeTable, DeValue};

/// Default `max_open`.
pub const DEFAULT_MAX_OPEN: u32 = 16;

/// Business hours in one time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// IANA time zone name, e.g. `Europe/Berlin` (default `UTC`).
    pub time_zone: String,
    /// Business days, `mon` .. `sun` (default Monday to Friday).
    pub days: Vec<String>,
    /// Start of business hours, minutes after local midnight (inclusive).
    pub start_min: u32,
    /// End of business hours, minutes after local midnight (exclusive).
    pub end_min: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            time_zone: "UTC".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            start_min: 8 * 60,
            end_min: 18 * 60,
        }
    }
}

impl Schedule {
    /// Whether `ts_ms` is inside business hours. A time zone that does not
    /// parse (validated at load, so not in practice) counts as UTC.
    pub fn is_business(&self, ts_ms: i64) -> bool {
        let tz: Tz = self.time_zone.parse().unwrap_or(Tz::UTC);
        let Some(t) = Utc.timestamp_millis_opt(ts_ms).single() else {
            return false;
        };
        let local = t.with_timezone(&tz);
        let day = local.weekday();
        let business_day = self.days.iter().any(|d| weekday_named(d) == Some(day));
        let minute = local.hour() * 60 + local.minute();
        business_day && self.start_min <= minute && minute < self.end_min
    }
}

/// An off-hours session rule (`[[off_hours_session]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffHoursRule {
    /// Rule name.
    pub name: String,
    /// Business hours of tenants without their own.
    pub schedule: Schedule,
    /// Business hours per tenant id.
    #[serde(default)]
    pub tenants: BTreeMap<String, Schedule>,
    /// Off-hours sessions kept open per agent.
    pub max_open: u32,
    /// Severity of the alert.
    pub severity: Severity,
}

impl OffHoursRule {
    /// The schedule of `tenant`.
    pub fn schedule_of(&self, tenant: &str) -> &Schedule {
        self.tenants.get(tenant).unwrap_or(&self.schedule)
    }
}

impl FamilyRule for OffHoursRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.schedule == other.schedule
            && self.tenants == other.tenants
            && self.max_open == other.max_open
    }
}

impl ReportRule for OffHoursRule {
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// An open off-hours session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    /// Session id.
    pub session_id: String,
    /// Technician.
    pub technician: String,
    /// Start (the incident's start).
    pub started_ms: i64,
}

impl Tracked for OpenSession {
    fn labels(&self) -> String {
        security::labels([
            ("session", self.session_id.as_str()),
            ("technician", self.technician.as_str()),
        ])
    }

    /// A session is kept only while its incident is open.
    fn open_since(&self) -> Option<i64> {
        Some(self.started_ms)
    }
}

/// State of one (agent, rule): its open off-hours sessions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffHoursState {
    /// Open off-hours sessions.
    pub open: Vec<OpenSession>,
}

/// The off-hours session family (see the module docs).
pub struct OffHoursSession;

/// Reads a schedule's keys of `t` (absent keys from `base`).
fn schedule(cx: &mut Cx<'_>, t: &DeTable<'_>, path: &str, base: &Schedule) -> Option<Schedule> {
    let span = 0..0;
    let mut ok = true;
    let mut out = base.clone();
    if let Some(v) = t.get("time_zone") {
        match cx.string(t, &span, path, "time_zone", false) {
            Some(z) if z.parse::<Tz>().is_ok() => out.time_zone = z,
            Some(z) => {
                cx.problem(
                    v.span(),
                    format!("{path}.time_zone"),
                    format!("unknown time zone {z:?} (use an IANA name such as \"Europe/Berlin\")"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(v) = t.get("days") {
        match v.get_ref() {
            DeValue::Array(items) => {
                let mut days = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    match it.get_ref().as_str() {
                        Some(d) if weekday_named(d).is_some() => days.push(d.to_string()),
                        _ => {
                            cx.problem(
                                it.span(),
                                format!("{path}.days[{i}]"),
                                "expected one of: \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"",
                            );
                            ok = false;
                        }
                    }
                }
                out.days = days;
            }
            other => {
                cx.problem(
                    v.span(),
                    format!("{path}.days"),
                    format!("expected an array of day names, found {}", other.type_str()),
                );
                ok = false;
            }
        }
    }
    for (key, slot) in [("start", &mut out.start_min), ("end", &mut out.end_min)] {
        if let Some(v) = t.get(key) {
            match v.get_ref().as_str().and_then(parse_hhmm) {
                Some(m) => *slot = m,
                None => {
                    cx.problem(
                        v.span(),
                        format!("{path}.{key}"),
                        "expected a local time \"HH:MM\" (00:00 to 24:00)",
                    );
                    ok = false;
                }
            }
        }
    }
    if ok && out.start_min >= out.end_min {
        let sp = t.get("end").or(t.get("start")).map_or(0..0, |v| v.span());
        cx.problem(sp, format!("{path}.end"), "must be after start");
        ok = false;
    }
    ok.then_some(out)
}

impl ReportFamily for OffHoursSession {
    type Rule = OffHoursRule;
    type State = OffHoursState;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<OffHoursRule> {
        const KEYS: &[&str] = &[
            "name",
            "time_zone",
            "days",
            "start",
            "end",
            "tenants",
            "max_open",
            "severity",
        ];
        const SCHEDULE_KEYS: &[&str] = &["time_zone", "days", "start", "end"];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let base = schedule(cx, t, path, &Schedule::default());
        let mut tenants = Some(BTreeMap::new());
        if let Some(v) = t.get("tenants") {
            match v.get_ref() {
                DeValue::Table(tt) => {
                    for (k, tv) in tt.iter() {
                        let tp = format!("{path}.tenants.{}", k.get_ref());
                        let parsed = cx.fields(&tp, tv, SCHEDULE_KEYS).and_then(|st| {
                            schedule(cx, st, &tp, base.as_ref().unwrap_or(&Schedule::default()))
                        });
                        match (parsed, tenants.as_mut()) {
                            (Some(s), Some(m)) => {
                                m.insert(k.get_ref().to_string(), s);
                            }
                            _ => tenants = None,
                        }
                    }
                }
                other => {
                    cx.problem(
                        v.span(),
                        format!("{path}.tenants"),
                        format!(
                            "expected a table of tenant schedules, found {}",
                            other.type_str()
                        ),
                    );
                    tenants = None;
                }
            }
        }
        let max_open = cx.integer_or(t, path, "max_open", 1, DEFAULT_MAX_OPEN);
        let severity = cx.severity(t, &span, path);
        Some(OffHoursRule {
            name: name?,
            schedule: base?,
            tenants: tenants?,
            max_open: max_open?,
            severity: severity?,
        })
    }

    fn on_security(
        rule: &OffHoursRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        e: &SecurityEvent,
        st: &mut OffHoursState,
        out: &mut Vec<AlertEvent>,
    ) {
        if e.kind == SecurityEventKind::RemoteSessionStart as i32 {
            if st.open.iter().any(|s| s.session_id == e.session_id) {
                return;
            }
            let sched = rule.schedule_of(a.tenant);
            if sched.is_business(e.timestamp_ms) {
                return;
            }
            if st.open.len() >= rule.max_open as usize {
                let old = st.open.remove(0);
                out.extend(security::retired(
                    &old,
                    rule,
                    rules,
                    a,
                    e.timestamp_ms,
                    ResolveReason::Stale,
                    None,
                ));
            }
            let s = OpenSession {
                session_id: e.session_id.clone(),
                technician: e.technician.clone(),
                started_ms: e.timestamp_ms,
            };
            out.push(security::event(
                &s,
                rule,
                rules,
                a,
                AlertStatus::Firing,
                s.started_ms,
                s.started_ms,
                format!(
                    "technician {} started remote session {} on agent {} outside business hours ({})",
                    s.technician, s.session_id, a.agent, sched.time_zone
                ),
            ));
            st.open.push(s);
        } else if e.kind == SecurityEventKind::RemoteSessionEnd as i32 {
            let Some(i) = st.open.iter().position(|s| s.session_id == e.session_id) else {
                return;
            };
            let s = st.open.remove(i);
            out.push(security::event(
                &s,
                rule,
                rules,
                a,
                AlertStatus::Resolved,
                s.started_ms,
                e.timestamp_ms.max(s.started_ms),
                format!(
                    "technician {} ended remote session {} on agent {}",
                    s.technician, s.session_id, a.agent
                ),
            ));
        }
    }

    fn close(
        rule: &OffHoursRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        reason: ResolveReason,
        st: OffHoursState,
        out: &mut Vec<AlertEvent>,
    ) {
        security::close_all(&st.open, rule, rules, a, reason, None, out);
    }
}
