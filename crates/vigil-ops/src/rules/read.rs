//! Reading a rules file: the walker over `toml`'s spanned document tree
//! that reports every problem with its line, column and TOML path, and
//! the field readers (strings, numbers, durations, severities, label
//! matchers, names, summary templates) that the detector families use to
//! read their own sections (see [`crate::detect::registry`]).
//!
//! Each reader records a problem and returns `None` when a field is
//! wrong, so a family's reader goes on and reports every problem of its
//! section at once.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::audit::{RulesMeta, MAX_META_CHARS};
use super::calendar::{days_from_civil, parse_hhmm, weekday_named};
use super::{MaintenanceWindow, Recurrence, RuleProblem, RuleSet, RulesError, MAX_OCCURRENCE_MS};
use crate::detect::registry::FAMILY_KEYS;
use crate::model::{AggregateKind, Severity};

/// A value of the spanned TOML document tree.
pub type Val<'i> = Spanned<DeValue<'i>>;

/// The state of one validation pass over a rules file: the text (for
/// line and column numbers), every problem found so far, and the rule
/// names defined so far (names are unique across all families).
pub struct Cx<'a> {
    text: &'a str,
    problems: Vec<(usize, RuleProblem)>,
    names: BTreeMap<String, NameSite>,
    /// The file's `[meta]` table (who changed the rules, when, why).
    meta: RulesMeta,
}

/// Where a rule name was defined, for duplicate detection.
struct NameSite {
    line: usize,
}

impl<'a> Cx<'a> {
    /// Parses `text` and validates it; `origin` names it in errors.
    pub(crate) fn read(text: &'a str, origin: &str) -> Result<(RuleSet, RulesMeta), RulesError> {
        let mut cx = Cx {
            text,
            problems: Vec::new(),
            names: BTreeMap::new(),
            meta: RulesMeta::default(),
        };
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            for e in syntax {
                let msg = e
                    .message()
                    .lines()
                    .next()
                    .unwrap_or("syntax error")
                    .trim()
                    .to_string();
                cx.problem(e.span().unwrap_or(0..0), String::new(), msg);
            }
            return Err(cx.into_error(origin));
        }
        let set = cx.rule_set(root.get_ref());
        if cx.problems.is_empty() {
            Ok((set, cx.meta))
        } else {
            Err(cx.into_error(origin))
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    pub(crate) fn problem(&mut self, span: Range<usize>, path: String, message: impl Into<String>) {
        let (line, column) = self.line_col(span.start);
        self.problems.push((
            span.start,
            RuleProblem {
                line,
                column,
                path,
                message: message.into(),
            },
        ));
    }

    fn into_error(mut self, origin: &str) -> RulesError {
        self.problems.sort_by_key(|(off, _)| *off);
        RulesError {
            origin: origin.to_string(),
            problems: self.problems.into_iter().map(|(_, p)| p).collect(),
        }
    }

    /// Reads the whole document: every section a detector family owns
    /// (see [`crate::detect::registry`]), the maintenance windows and the
    /// `[meta]` table.
    fn rule_set(&mut self, root: &DeTable<'_>) -> RuleSet {
        let mut set = RuleSet::default();
        for (key, val) in root.iter() {
            let k = key.get_ref().as_ref();
            if k == "maintenance" {
                for (i, item) in self.tables_array(k, val).into_iter().enumerate() {
                    let path = format!("maintenance[{i}]");
                    if let Some(m) = self.maintenance(&path, item) {
                        set.maintenance.push(m);
                    }
                }
            } else if k == "meta" {
                if let Some(m) = self.meta(val) {
                    self.meta = m;
                }
            } else if !set.read_section(self, k, val) {
                self.problem(
                    key.span(),
                    k.to_string(),
                    format!(
                        "unknown key (expected one of: {}, maintenance, meta)",
                        FAMILY_KEYS.join(", ")
                    ),
                );
            }
        }
        set
    }

    /// The table of a singleton section `[key]`.
    pub(crate) fn table<'v, 'i>(&mut self, key: &str, val: &'v Val<'i>) -> Option<&'v Val<'i>> {
        match val.get_ref() {
            DeValue::Table(_) => Some(val),
            other => {
                self.problem(
                    val.span(),
                    key.to_string(),
                    format!("expected a table ([{key}]), found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// The items of `[[key]]`: an array of tables.
    pub(crate) fn tables_array<'v, 'i>(&mut self, key: &str, val: &'v Val<'i>) -> Vec<&'v Val<'i>> {
        match val.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if item.get_ref().is_table() {
                        out.push(item);
                    } else {
                        self.problem(
                            item.span(),
                            format!("{key}[{i}]"),
                            format!("expected a table, found {}", item.get_ref().type_str()),
                        );
                    }
                }
                out
            }
            other => {
                self.problem(
                    val.span(),
                    key.to_string(),
                    format!(
                        "expected an array of tables ([[{key}]]), found {}",
                        other.type_str()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Reports keys of `table` not in `allowed`; returns the table.
    pub(crate) fn fields<'v, 'i>(
        &mut self,
        path: &str,
        val: &'v Val<'i>,
        allowed: &[&str],
    ) -> Option<&'v DeTable<'i>> {
        let DeValue::Table(t) = val.get_ref() else {
            self.problem(
                val.span(),
                path.to_string(),
                format!("expected a table, found {}", val.get_ref().type_str()),
            );
            return None;
        };
        for (k, _) in t.iter() {
            let name = k.get_ref().as_ref();
            if !allowed.contains(&name) {
                self.problem(
                    k.span(),
                    format!("{path}.{name}"),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(t)
    }

    pub(crate) fn missing(&mut self, table_span: Range<usize>, path: &str, key: &str) {
        self.problem(
            table_span,
            format!("{path}.{key}"),
            "missing required field",
        );
    }

    /// The window aggregate `key = "aggregate"` of `t` names; when absent,
    /// `default`, or a missing-field problem when there is none.
    pub(crate) fn aggregate(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        default: Option<AggregateKind>,
    ) -> Option<AggregateKind> {
        let Some(v) = t.get("aggregate") else {
            if default.is_none() {
                self.missing(span.clone(), path, "aggregate");
            }
            return default;
        };
        let a = match v.get_ref().as_str() {
            Some("count") => Some(AggregateKind::Count),
            Some("sum") => Some(AggregateKind::Sum),
            Some("min") => Some(AggregateKind::Min),
            Some("max") => Some(AggregateKind::Max),
            Some("mean") => Some(AggregateKind::Mean),
            Some("last") => Some(AggregateKind::Last),
            _ => None,
        };
        if a.is_none() {
            self.problem(
                v.span(),
                format!("{path}.aggregate"),
                "expected one of: \"count\", \"sum\", \"min\", \"max\", \"mean\", \"last\"",
            );
        }
        a
    }

    pub(crate) fn string(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<String> {
        match t.get(key) {
            None => {
                if required {
                    self.missing(span.clone(), path, key);
                }
                None
            }
            Some(v) => match v.get_ref() {
                DeValue::String(s) => {
                    if s.is_empty() {
                        self.problem(v.span(), format!("{path}.{key}"), "must not be empty");
                        None
                    } else {
                        Some(s.to_string())
                    }
                }
                other => {
                    self.problem(
                        v.span(),
                        format!("{path}.{key}"),
                        format!("expected a string, found {}", other.type_str()),
                    );
                    None
                }
            },
        }
    }

    pub(crate) fn number(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<(f64, Range<usize>)> {
        let v = match t.get(key) {
            None => {
                if required {
                    self.missing(span.clone(), path, key);
                }
                return None;
            }
            Some(v) => v,
        };
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|x| x as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            other => {
                self.problem(
                    v.span(),
                    format!("{path}.{key}"),
                    format!("expected a number, found {}", other.type_str()),
                );
                return None;
            }
        };
        match parsed {
            Some(x) if x.is_finite() => Some((x, v.span())),
            _ => {
                self.problem(v.span(), format!("{path}.{key}"), "must be a finite number");
                None
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        min: i64,
    ) -> Option<u32> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(x) if x < min => {
                    self.problem(
                        v.span(),
                        format!("{path}.{key}"),
                        format!("must be >= {min}"),
                    );
                    None
                }
                Ok(x) => match u32::try_from(x) {
                    Ok(x) => Some(x),
                    Err(_) => {
                        self.problem(
                            v.span(),
                            format!("{path}.{key}"),
                            format!("must be <= {}", u32::MAX),
                        );
                        None
                    }
                },
                Err(_) => {
                    self.problem(v.span(), format!("{path}.{key}"), "integer out of range");
                    None
                }
            },
            other => {
                self.problem(
                    v.span(),
                    format!("{path}.{key}"),
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A humantime duration string such as `"10m"` or `"24h"`, > 0.
    pub(crate) fn duration(&mut self, t: &DeTable<'_>, path: &str, key: &str) -> Option<Duration> {
        let v = t.get(key)?;
        let p = format!("{path}.{key}");
        match v.get_ref() {
            DeValue::String(s) => {
                match humantime::parse_duration(s) {
                    Ok(d) if d.is_zero() => {
                        self.problem(v.span(), p, "must be > 0");
                        None
                    }
                    Ok(d) if d.as_millis() > i64::MAX as u128 / 4 => {
                        self.problem(v.span(), p, "duration too large");
                        None
                    }
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.problem(v.span(), p, format!("invalid duration {s:?}: {e} (write e.g. \"90s\", \"10m\", \"24h\")"));
                        None
                    }
                }
            }
            other => {
                self.problem(
                    v.span(),
                    p,
                    format!(
                        "expected a duration string such as \"10m\", found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// [`Cx::duration`] of an optional key: `default` when absent.
    pub(crate) fn duration_or(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        if t.contains_key(key) {
            self.duration(t, path, key)
        } else {
            Some(default)
        }
    }

    /// [`Cx::integer`] of an optional key: `default` when absent.
    pub(crate) fn integer_or(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        min: i64,
        default: u32,
    ) -> Option<u32> {
        if t.contains_key(key) {
            self.integer(t, path, key, min)
        } else {
            Some(default)
        }
    }

    pub(crate) fn severity(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
    ) -> Option<Severity> {
        let v = match t.get("severity") {
            None => {
                self.missing(span.clone(), path, "severity");
                return None;
            }
            Some(v) => v,
        };
        match v.get_ref().as_str() {
            Some("info") => Some(Severity::Info),
            Some("warning") => Some(Severity::Warning),
            Some("critical") => Some(Severity::Critical),
            _ => {
                self.problem(
                    v.span(),
                    format!("{path}.severity"),
                    "expected one of: \"info\", \"warning\", \"critical\"",
                );
                None
            }
        }
    }

    pub(crate) fn labels(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
    ) -> Option<BTreeMap<String, String>> {
        let Some(v) = t.get("labels") else {
            return Some(BTreeMap::new());
        };
        let DeValue::Table(lt) = v.get_ref() else {
            self.problem(
                v.span(),
                format!("{path}.labels"),
                format!(
                    "expected a table such as {{ mount = \"/data\" }}, found {}",
                    v.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, lv) in lt.iter() {
            match lv.get_ref() {
                DeValue::String(s) => {
                    out.insert(k.get_ref().to_string(), s.to_string());
                }
                other => {
                    ok = false;
                    self.problem(
                        lv.span(),
                        format!("{path}.labels.{}", k.get_ref()),
                        format!("expected a string, found {}", other.type_str()),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn name(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
    ) -> Option<String> {
        let name = self.string(t, span, path, "name", true)?;
        let vspan = t.get("name").map(|v| v.span()).unwrap_or(span.clone());
        let (line, _) = self.line_col(vspan.start);
        if let Some(first) = self.names.get(&name) {
            let first_line = first.line;
            self.problem(
                vspan,
                format!("{path}.name"),
                format!("duplicate rule name {name:?} (first defined on line {first_line})"),
            );
            return None;
        }
        self.names.insert(name.clone(), NameSite { line });
        Some(name)
    }

    pub(crate) fn summary(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        allowed: &[&str],
    ) -> Option<Option<String>> {
        let Some(s) = self.string(t, span, path, "summary", false) else {
            return Some(None);
        };
        let vspan = t.get("summary").map(|v| v.span()).unwrap_or(span.clone());
        let mut rest = s.as_str();
        let mut ok = true;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) => {
                    let ph = &after[..close];
                    if !allowed.contains(&ph) {
                        ok = false;
                        self.problem(
                            vspan.clone(),
                            format!("{path}.summary"),
                            format!(
                                "unknown placeholder {{{ph}}} (allowed: {})",
                                allowed.join(", ")
                            ),
                        );
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    ok = false;
                    self.problem(
                        vspan.clone(),
                        format!("{path}.summary"),
                        "unclosed `{` in template",
                    );
                    break;
                }
            }
        }
        ok.then_some(Some(s))
    }

    /// The `name` of a singleton rule table, or `default` when absent.
    pub(crate) fn name_or(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        default: &str,
    ) -> Option<String> {
        if t.contains_key("name") {
            return self.name(t, span, path);
        }
        let n = default.to_string();
        if self.names.contains_key(&n) {
            self.problem(
                span.clone(),
                format!("{path}.name"),
                format!("default name {n:?} clashes with another rule"),
            );
            return None;
        }
        let (line, _) = self.line_col(span.start);
        self.names.insert(n.clone(), NameSite { line });
        Some(n)
    }

    /// The `[meta]` table: who changed the rules (`changed_by`), under
    /// which change ticket (`change_ref`), when (`changed_at`, an instant
    /// like a maintenance window's `start`) and why (`note`); every field
    /// optional, strings non-empty and at most [`MAX_META_CHARS`]
    /// characters.
    fn meta(&mut self, val: &Val<'_>) -> Option<RulesMeta> {
        const KEYS: &[&str] = &["changed_by", "change_ref", "changed_at", "note"];
        let val = self.table("meta", val)?;
        let t = self.fields("meta", val, KEYS)?;
        let span = val.span();
        let text = |cx: &mut Self, key: &str| {
            let s = cx.string(t, &span, "meta", key, false)?;
            if s.chars().count() > MAX_META_CHARS {
                let sp = t.get(key).map_or(span.clone(), |v| v.span());
                cx.problem(
                    sp,
                    format!("meta.{key}"),
                    format!("must be at most {MAX_META_CHARS} characters"),
                );
                return None;
            }
            Some(s)
        };
        let changed_by = text(self, "changed_by");
        let change_ref = text(self, "change_ref");
        let note = text(self, "note");
        let changed_at_ms = match t.contains_key("changed_at") {
            true => Some(self.instant(t, &span, "meta", "changed_at")?.0),
            false => None,
        };
        Some(RulesMeta {
            changed_by,
            change_ref,
            changed_at_ms,
            note,
        })
    }

    fn maintenance(&mut self, path: &str, val: &Val<'_>) -> Option<MaintenanceWindow> {
        const KEYS: &[&str] = &[
            "tenant",
            "agent",
            "start",
            "end",
            "reason",
            "at",
            "days",
            "duration",
            "time_zone",
        ];
        let t = self.fields(path, val, KEYS)?;
        let span = val.span();
        let tenant = self.string(t, &span, path, "tenant", true);
        let agent_ok = !t.contains_key("agent");
        let agent = self.string(t, &span, path, "agent", false);
        let reason = self.string(t, &span, path, "reason", false);
        let recurring = t.contains_key("at");
        let mut stray = false;
        let (start, end) = if recurring {
            // Optional bounds of the recurrence.
            let start = match t.contains_key("start") {
                true => self.instant(t, &span, path, "start").map(Some),
                false => Some(None),
            };
            let end = match t.contains_key("end") {
                true => self.instant(t, &span, path, "end").map(Some),
                false => Some(None),
            };
            (start, end)
        } else {
            for key in ["days", "duration", "time_zone"] {
                if let Some(v) = t.get(key) {
                    self.problem(
                        v.span(),
                        format!("{path}.{key}"),
                        "only for a recurring window (one with `at`)",
                    );
                    stray = true;
                }
            }
            (
                self.instant(t, &span, path, "start").map(Some),
                self.instant(t, &span, path, "end").map(Some),
            )
        };
        if let (Some(Some((s, _))), Some(Some((e, espan)))) = (start.clone(), end.clone()) {
            if e <= s {
                self.problem(espan, format!("{path}.end"), "must be after start");
                return None;
            }
        }
        let every = if recurring {
            Some(self.recurrence(t, &span, path))
        } else {
            None
        };
        if agent.is_none() && !agent_ok {
            return None;
        }
        let every = match every {
            Some(r) => Some(r?),
            None => None,
        };
        if stray {
            return None;
        }
        Some(MaintenanceWindow {
            tenant: tenant?,
            agent,
            start_ms: start?.map_or(i64::MIN, |s| s.0),
            end_ms: end?.map_or(i64::MAX, |e| e.0),
            reason,
            every,
        })
    }

    /// The occurrences of a recurring maintenance window: `at`
    /// (required, local `HH:MM`), `duration` (required, at most 7 days),
    /// `days` and `time_zone` (optional).
    fn recurrence(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
    ) -> Option<Recurrence> {
        let mut ok = true;
        let at = t.get("at").and_then(|v| {
            let m = v
                .get_ref()
                .as_str()
                .and_then(parse_hhmm)
                .filter(|&m| m < 24 * 60);
            if m.is_none() {
                self.problem(
                    v.span(),
                    format!("{path}.at"),
                    "expected a local time \"HH:MM\" (00:00 to 23:59)",
                );
            }
            m
        });
        if !t.contains_key("duration") {
            self.missing(span.clone(), path, "duration");
        }
        let duration = self.duration(t, path, "duration").and_then(|d| {
            let ms = d.as_millis() as i64;
            if ms > MAX_OCCURRENCE_MS {
                let sp = t.get("duration").map_or(span.clone(), |v| v.span());
                self.problem(sp, format!("{path}.duration"), "must be at most 7 days");
                None
            } else {
                Some(ms)
            }
        });
        let mut time_zone = "UTC".to_string();
        if let Some(v) = t.get("time_zone") {
            match self.string(t, span, path, "time_zone", false) {
                Some(z) if z.parse::<chrono_tz::Tz>().is_ok() => time_zone = z,
                Some(z) => {
                    self.problem(
                        v.span(),
                        format!("{path}.time_zone"),
                        format!(
                            "unknown time zone {z:?} (use an IANA name such as \"Europe/Berlin\")"
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut days = Vec::new();
        if let Some(v) = t.get("days") {
            match v.get_ref() {
                DeValue::Array(items) if !items.is_empty() => {
                    for (i, it) in items.iter().enumerate() {
                        match it.get_ref().as_str().filter(|d| weekday_named(d).is_some()) {
                            Some(d) => days.push(d.to_string()),
                            None => {
                                self.problem(
                                    it.span(),
                                    format!("{path}.days[{i}]"),
                                    "expected one of: \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                other => {
                    self.problem(
                        v.span(),
                        format!("{path}.days"),
                        format!(
                            "expected a non-empty array of day names, found {}",
                            match other {
                                DeValue::Array(_) => "an empty array",
                                o => o.type_str(),
                            }
                        ),
                    );
                    ok = false;
                }
            }
        }
        let (at_min, duration_ms) = (at?, duration?);
        ok.then_some(Recurrence {
            time_zone,
            days,
            at_min,
            duration_ms,
        })
    }

    /// An instant: TOML offset date-time, an RFC 3339 string, or integer ms
    /// since the epoch.
    fn instant(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        key: &str,
    ) -> Option<(i64, Range<usize>)> {
        let Some(v) = t.get(key) else {
            self.missing(span.clone(), path, key);
            return None;
        };
        let p = format!("{path}.{key}");
        let parsed: Result<i64, String> = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| "integer out of range".to_string()),
            DeValue::Datetime(d) => datetime_ms(d),
            DeValue::String(s) => s
                .parse::<toml::value::Datetime>()
                .map_err(|e| format!("invalid RFC 3339 date-time {s:?}: {e}"))
                .and_then(|d| datetime_ms(&d)),
            other => Err(format!(
                "expected an RFC 3339 date-time or ms since epoch, found {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(ms) => Some((ms, v.span())),
            Err(m) => {
                self.problem(v.span(), p, m);
                None
            }
        }
    }
}

/// Milliseconds since the epoch of a TOML offset date-time.
pub(crate) fn datetime_ms(d: &toml::value::Datetime) -> Result<i64, String> {
    let (Some(date), Some(time), Some(offset)) = (d.date, d.time, d.offset) else {
        return Err(
            "date-time must have a date, a time and a UTC offset (e.g. 2026-03-01T22:00:00Z)"
                .into(),
        );
    };
    let days = days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second);
    let off_min = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    Ok((secs - off_min * 60) * 1000 + i64::from(time.nanosecond / 1_000_000))
}
