//! Alert rules: the TOML file format, its validation, and the embedded
//! default rule set (`config/rules.toml`).
//!
//! This module owns the *configuration* side of detection: what a rule
//! says, how the file is read, and every check a rule must pass before the
//! engine in [`crate::detect`] may run it. It holds no detector state.
//!
//! # Reading a file
//!
//! [`RuleSet::from_toml`] parses the text into `toml`'s spanned document
//! tree ([`toml::de::DeTable`]) and walks it by hand instead of going
//! through `#[derive(Deserialize)]`: serde stops at the first error, while a
//! rules file MUST be reported with *every* problem at once, each with the
//! file, line, column and TOML path of the offending field
//! (`rules.toml:12:9: threshold[2].for: must be >= 1`). Unknown keys are
//! errors (the hand-written equivalent of `deny_unknown_fields`). Array
//! indexes in paths are 0-based.
//!
//! The validated [`RuleSet`] is plain data and also implements serde (with
//! `deny_unknown_fields` and humantime durations), so it can be echoed in
//! diagnostics or stored next to a checkpoint.
//!
//! The full file reference lives in `docs/rules.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::model::{AggregateKind, Severity};

/// The default rules file, embedded at build time.
pub const DEFAULT_RULES_TOML: &str = include_str!("../../../config/rules.toml");

/// Default `for` of a threshold rule (windows).
pub const DEFAULT_FOR: u32 = 1;

/// `clear_for` of a threshold rule that does not give one: the first
/// window past `clear` resolves.
pub const DEFAULT_CLEAR_FOR: u32 = 1;

fn default_clear_for() -> u32 {
    DEFAULT_CLEAR_FOR
}
/// Default trend horizon.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Default trend lookback.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(6 * 3600);
/// Default minimum effective number of windows behind a trend fit.
pub const DEFAULT_MIN_POINTS: u32 = 120;
/// Default minimum coefficient of determination of a trend fit.
pub const DEFAULT_MIN_R2: f64 = 0.0;
/// Default minimum t-statistic (slope / standard error) of a trend fit.
pub const DEFAULT_MIN_T: f64 = 8.0;
/// Default ratio of remaining headroom to observed rise a trend may
/// extrapolate (see `docs/rules.md`, "max_extrapolation").
pub const DEFAULT_MAX_EXTRAPOLATION: f64 = 1.0;
/// Default time a trend prediction must stay false before the alert resolves.
pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Default name of the offline rule.
pub const DEFAULT_OFFLINE_NAME: &str = "agent_offline";
/// Default name of the invalid-input rule.
pub const DEFAULT_INVALID_INPUT_NAME: &str = "agent_invalid_input";
/// Default number of consecutive refused batches before an agent's input
/// counts as invalid.
pub const DEFAULT_INVALID_BATCHES: u32 = 3;

/// Placeholders a threshold `summary` template may use.
pub const THRESHOLD_PLACEHOLDERS: &[&str] = &[
    "rule",
    "tenant",
    "agent",
    "metric",
    "labels",
    "series",
    "aggregate",
    "op",
    "value",
    "threshold",
    "for",
];
/// Placeholders a trend `summary` template may use.
pub const TREND_PLACEHOLDERS: &[&str] = &[
    "rule",
    "tenant",
    "agent",
    "metric",
    "labels",
    "series",
    "limit",
    "value",
    "predicted_at",
    "in_hours",
];

/// A comparison operator of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
}

impl CompareOp {
    /// Parses `>`, `>=`, `<` or `<=`.
    pub fn parse(s: &str) -> Option<CompareOp> {
        match s {
            ">" => Some(CompareOp::Gt),
            ">=" => Some(CompareOp::Ge),
            "<" => Some(CompareOp::Lt),
            "<=" => Some(CompareOp::Le),
            _ => None,
        }
    }

    /// Applies the comparison `lhs op rhs` (false when either is NaN).
    #[inline]
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            CompareOp::Gt => lhs > rhs,
            CompareOp::Ge => lhs >= rhs,
            CompareOp::Lt => lhs < rhs,
            CompareOp::Le => lhs <= rhs,
        }
    }

    /// True for `>` and `>=` (the bad side is above the value).
    pub fn is_upper(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge)
    }

    /// The operator as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a trend rule watches a series go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The series rises towards `limit` (disk filling).
    #[default]
    Rising,
    /// The series falls towards `limit` (free space shrinking).
    Falling,
}

/// A fixed-threshold rule (`[[threshold]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// Unique rule name; part of the alert fingerprint.
    pub name: String,
    /// Metric the rule watches.
    pub metric: String,
    /// Labels the series must carry with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Window aggregate compared against `value`.
    pub aggregate: AggregateKind,
    /// Comparison: the window breaches when `aggregate op value`.
    pub op: CompareOp,
    /// Threshold value.
    pub value: f64,
    /// Consecutive breaching windows needed to fire (>= 1).
    #[serde(rename = "for")]
    pub for_windows: u32,
    /// Hysteresis: a firing alert resolves once `aggregate op clear` no
    /// longer holds. Equal to `value` when not given.
    pub clear: f64,
    /// Consecutive windows past `clear` needed to resolve a firing
    /// incident (1..=65535, default 1). Shorter excursions past `clear`
    /// keep the incident open and count as flaps.
    #[serde(default = "default_clear_for")]
    pub clear_for: u32,
    /// Severity of the alert.
    pub severity: Severity,
    /// Optional summary template (`{metric}`, `{value}`, ... see
    /// [`THRESHOLD_PLACEHOLDERS`]).
    #[serde(default)]
    pub summary: Option<String>,
}

/// A predictive trend rule (`[[trend]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendRule {
    /// Unique rule name; part of the alert fingerprint.
    pub name: String,
    /// Metric the rule watches (window means are fitted).
    pub metric: String,
    /// Labels the series must carry with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The value the series must not reach (e.g. 100 for disk percent).
    pub limit: f64,
    /// Whether the series rises or falls towards `limit`.
    #[serde(default)]
    pub direction: Direction,
    /// Fire when the limit is predicted within this time.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Memory of the fit: the slow fit's time constant is half of it.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Minimum effective number of windows in the fit before it may fire.
    pub min_points: u32,
    /// Minimum R² of the fit (0 disables the gate).
    pub min_r2: f64,
    /// Minimum t-statistic of the fitted slope (slope / standard error).
    pub min_t: f64,
    /// Largest ratio of remaining headroom to the rise observed since the
    /// series' last low point that the detector extrapolates.
    pub max_extrapolation: f64,
    /// A firing prediction resolves after it stayed false this long.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// Severity of the alert.
    pub severity: Severity,
    /// Optional summary template (see [`TREND_PLACEHOLDERS`]).
    #[serde(default)]
    pub summary: Option<String>,
}

/// The offline rule (`[offline]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    /// Rule name (default `agent_offline`).
    pub name: String,
    /// An agent that sent nothing for longer than this is offline.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

/// The invalid-input rule (`[invalid_input]`): an agent that is alive but
/// whose every batch is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidInputRule {
    /// Rule name (default `agent_invalid_input`).
    pub name: String,
    /// Consecutive refused batches (with no good batch between them)
    /// needed to fire (>= 1).
    pub batches: u32,
    /// ... that also span at least this much processing time, from the
    /// first of them to the one that fires (zero: no time condition).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

impl ThresholdRule {
    /// True when `other` detects exactly like `self`: everything but the
    /// name (the caller matches names), the severity and the summary
    /// template, which shape events but not state. Detector state built
    /// under one definition is valid under the other only when this holds.
    pub fn same_definition(&self, other: &ThresholdRule) -> bool {
        self.metric == other.metric
            && self.labels == other.labels
            && self.aggregate == other.aggregate
            && self.op == other.op
            && self.value.to_bits() == other.value.to_bits()
            && self.for_windows == other.for_windows
            && self.clear.to_bits() == other.clear.to_bits()
            && self.clear_for == other.clear_for
    }
}

impl TrendRule {
    /// See [`ThresholdRule::same_definition`]: every field that shapes the
    /// fit or its gates.
    pub fn same_definition(&self, other: &TrendRule) -> bool {
        self.metric == other.metric
            && self.labels == other.labels
            && self.limit.to_bits() == other.limit.to_bits()
            && self.direction == other.direction
            && self.horizon == other.horizon
            && self.lookback == other.lookback
            && self.min_points == other.min_points
            && self.min_r2.to_bits() == other.min_r2.to_bits()
            && self.min_t.to_bits() == other.min_t.to_bits()
            && self.max_extrapolation.to_bits() == other.max_extrapolation.to_bits()
            && self.resolve_after == other.resolve_after
    }
}

impl OfflineRule {
    /// See [`ThresholdRule::same_definition`]: the same `after`.
    pub fn same_definition(&self, other: &OfflineRule) -> bool {
        self.after == other.after
    }
}

impl InvalidInputRule {
    /// See [`ThresholdRule::same_definition`]: the same `batches` and
    /// `after`.
    pub fn same_definition(&self, other: &InvalidInputRule) -> bool {
        self.batches == other.batches && self.after == other.after
    }
}

/// A maintenance window (`[[maintenance]]`): alerts whose event time falls
/// in `[start_ms, end_ms)` for the tenant (and agent, if given) are emitted
/// with `suppressed = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Tenant the window applies to.
    pub tenant: String,
    /// Agent the window applies to; every agent of the tenant when absent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Start (inclusive), ms since epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since epoch.
    pub end_ms: i64,
    /// Free text, e.g. a change ticket.
    #[serde(default)]
    pub reason: Option<String>,
}

impl MaintenanceWindow {
    /// True when this window covers an event of `tenant`/`agent` at `t_ms`.
    pub fn covers(&self, tenant: &str, agent: &str, t_ms: i64) -> bool {
        self.tenant == tenant
            && self.agent.as_deref().is_none_or(|a| a == agent)
            && self.start_ms <= t_ms
            && t_ms < self.end_ms
    }
}

/// A validated set of detector rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Threshold rules, in file order.
    #[serde(default)]
    pub threshold: Vec<ThresholdRule>,
    /// Trend rules, in file order.
    #[serde(default)]
    pub trend: Vec<TrendRule>,
    /// Offline detection; disabled when absent.
    #[serde(default)]
    pub offline: Option<OfflineRule>,
    /// Invalid-input detection; disabled when absent.
    #[serde(default)]
    pub invalid_input: Option<InvalidInputRule>,
    /// Maintenance windows.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
}

/// One problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleProblem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// TOML path of the field, e.g. `threshold[2].for` (empty for syntax
    /// errors).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A rules file failed to parse or validate. `Display` lists every
/// problem, one per line, as `origin:line:column: path: message`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RulesError {
    /// File name or other origin of the text.
    pub origin: String,
    /// Every problem found, in file order.
    pub problems: Vec<RuleProblem>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: ", self.origin, p.line, p.column)?;
            if !p.path.is_empty() {
                write!(f, "{}: ", p.path)?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

impl RuleSet {
    /// Parses and validates a rules file. `origin` names it in errors.
    /// Every problem is reported at once.
    pub fn from_toml(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        let mut cx = Cx {
            text,
            problems: Vec::new(),
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
            Ok(set)
        } else {
            Err(cx.into_error(origin))
        }
    }

    /// The embedded default rules (`config/rules.toml`). A unit test proves
    /// the embedded file is valid; should it ever not be, this returns an
    /// empty rule set rather than panicking.
    pub fn default_rules() -> RuleSet {
        RuleSet::from_toml(DEFAULT_RULES_TOML, "config/rules.toml").unwrap_or_default()
    }

    /// True when a maintenance window covers an event of `tenant`/`agent`
    /// at `t_ms`.
    pub fn in_maintenance(&self, tenant: &str, agent: &str, t_ms: i64) -> bool {
        self.maintenance
            .iter()
            .any(|m| m.covers(tenant, agent, t_ms))
    }
}

/// True when every `(key, value)` of `want` is in the canonical label
/// string `labels`.
pub fn labels_match(want: &BTreeMap<String, String>, labels: &str) -> bool {
    if want.is_empty() {
        return true;
    }
    let have = crate::model::parse_canonical_labels(labels);
    want.iter()
        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

// ---------------------------------------------------------------------------
// Validation walker
// ---------------------------------------------------------------------------

type Val<'i> = Spanned<DeValue<'i>>;

struct Cx<'a> {
    text: &'a str,
    problems: Vec<(usize, RuleProblem)>,
}

/// Where a rule name was defined, for duplicate detection.
struct NameSite {
    line: usize,
}

impl<'a> Cx<'a> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    fn problem(&mut self, span: Range<usize>, path: String, message: impl Into<String>) {
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

    fn rule_set(&mut self, root: &DeTable<'_>) -> RuleSet {
        let mut set = RuleSet::default();
        let mut names: BTreeMap<String, NameSite> = BTreeMap::new();
        for (key, val) in root.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "threshold" => {
                    for (i, item) in self.tables_array(k, val).into_iter().enumerate() {
                        let path = format!("threshold[{i}]");
                        if let Some(r) = self.threshold(&path, item, &mut names) {
                            set.threshold.push(r);
                        }
                    }
                }
                "trend" => {
                    for (i, item) in self.tables_array(k, val).into_iter().enumerate() {
                        let path = format!("trend[{i}]");
                        if let Some(r) = self.trend(&path, item, &mut names) {
                            set.trend.push(r);
                        }
                    }
                }
                "maintenance" => {
                    for (i, item) in self.tables_array(k, val).into_iter().enumerate() {
                        let path = format!("maintenance[{i}]");
                        if let Some(m) = self.maintenance(&path, item) {
                            set.maintenance.push(m);
                        }
                    }
                }
                "offline" => match val.get_ref() {
                    DeValue::Table(_) => set.offline = self.offline("offline", val, &mut names),
                    other => self.problem(
                        val.span(),
                        "offline".into(),
                        format!("expected a table ([offline]), found {}", other.type_str()),
                    ),
                },
                "invalid_input" => match val.get_ref() {
                    DeValue::Table(_) => {
                        set.invalid_input = self.invalid_input("invalid_input", val, &mut names)
                    }
                    other => self.problem(
                        val.span(),
                        "invalid_input".into(),
                        format!(
                            "expected a table ([invalid_input]), found {}",
                            other.type_str()
                        ),
                    ),
                },
                _ => self.problem(
                    key.span(),
                    k.to_string(),
                    "unknown key (expected one of: threshold, trend, offline, invalid_input, maintenance)",
                ),
            }
        }
        set
    }

    /// The items of `[[key]]`: an array of tables.
    fn tables_array<'v, 'i>(&mut self, key: &str, val: &'v Val<'i>) -> Vec<&'v Val<'i>> {
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
    fn fields<'v, 'i>(
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

    fn missing(&mut self, table_span: Range<usize>, path: &str, key: &str) {
        self.problem(
            table_span,
            format!("{path}.{key}"),
            "missing required field",
        );
    }

    fn string(
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

    fn number(
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

    fn integer(&mut self, t: &DeTable<'_>, path: &str, key: &str, min: i64) -> Option<u32> {
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
    fn duration(&mut self, t: &DeTable<'_>, path: &str, key: &str) -> Option<Duration> {
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

    fn severity(&mut self, t: &DeTable<'_>, span: &Range<usize>, path: &str) -> Option<Severity> {
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

    fn labels(&mut self, t: &DeTable<'_>, path: &str) -> Option<BTreeMap<String, String>> {
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

    fn name(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        names: &mut BTreeMap<String, NameSite>,
    ) -> Option<String> {
        let name = self.string(t, span, path, "name", true)?;
        let vspan = t.get("name").map(|v| v.span()).unwrap_or(span.clone());
        let (line, _) = self.line_col(vspan.start);
        if let Some(first) = names.get(&name) {
            let first_line = first.line;
            self.problem(
                vspan,
                format!("{path}.name"),
                format!("duplicate rule name {name:?} (first defined on line {first_line})"),
            );
            return None;
        }
        names.insert(name.clone(), NameSite { line });
        Some(name)
    }

    fn summary(
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

    fn threshold(
        &mut self,
        path: &str,
        val: &Val<'_>,
        names: &mut BTreeMap<String, NameSite>,
    ) -> Option<ThresholdRule> {
        const KEYS: &[&str] = &[
            "name",
            "metric",
            "labels",
            "aggregate",
            "op",
            "value",
            "for",
            "clear",
            "clear_for",
            "severity",
            "summary",
        ];
        let t = self.fields(path, val, KEYS)?;
        let span = val.span();
        let name = self.name(t, &span, path, names);
        let metric = self.string(t, &span, path, "metric", true);
        let labels = self.labels(t, path);
        let aggregate = match t.get("aggregate") {
            None => {
                self.missing(span.clone(), path, "aggregate");
                None
            }
            Some(v) => {
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
        };
        let op = match t.get("op") {
            None => {
                self.missing(span.clone(), path, "op");
                None
            }
            Some(v) => {
                let o = v.get_ref().as_str().and_then(CompareOp::parse);
                if o.is_none() {
                    self.problem(
                        v.span(),
                        format!("{path}.op"),
                        "expected one of: \">\", \">=\", \"<\", \"<=\"",
                    );
                }
                o
            }
        };
        let value = self.number(t, &span, path, "value", true);
        let for_present = t.contains_key("for");
        let for_windows = self.integer(t, path, "for", 1);
        let clear = self.number(t, &span, path, "clear", false);
        let clear_for_present = t.contains_key("clear_for");
        let clear_for = self.integer(t, path, "clear_for", 1);
        if let (Some(c), Some(v)) = (clear_for, t.get("clear_for")) {
            if c > u32::from(u16::MAX) {
                self.problem(
                    v.span(),
                    format!("{path}.clear_for"),
                    format!("must be <= {}", u16::MAX),
                );
                return None;
            }
        }
        let severity = self.severity(t, &span, path);
        let summary = self.summary(t, &span, path, THRESHOLD_PLACEHOLDERS);

        if let (Some(op), Some((v, _)), Some((c, cspan))) = (op, value.clone(), clear.clone()) {
            let wrong = if op.is_upper() { c > v } else { c < v };
            if wrong {
                let side = if op.is_upper() { "<=" } else { ">=" };
                self.problem(
                    cspan,
                    format!("{path}.clear"),
                    format!(
                        "must be on the safe side of value: clear {side} {v} for op {op:?}",
                        op = op.as_str()
                    ),
                );
                return None;
            }
        }
        let for_windows = match (for_present, for_windows) {
            (false, _) => DEFAULT_FOR,
            (true, Some(f)) => f,
            (true, None) => return None,
        };
        let clear_for = match (clear_for_present, clear_for) {
            (false, _) => default_clear_for(),
            (true, Some(c)) => c,
            (true, None) => return None,
        };
        let value = value?.0;
        Some(ThresholdRule {
            name: name?,
            metric: metric?,
            labels: labels?,
            aggregate: aggregate?,
            op: op?,
            value,
            for_windows,
            clear: clear.map_or(value, |c| c.0),
            clear_for,
            severity: severity?,
            summary: summary?,
        })
    }

    fn trend(
        &mut self,
        path: &str,
        val: &Val<'_>,
        names: &mut BTreeMap<String, NameSite>,
    ) -> Option<TrendRule> {
        const KEYS: &[&str] = &[
            "name",
            "metric",
            "labels",
            "limit",
            "direction",
            "horizon",
            "lookback",
            "min_points",
            "min_r2",
            "min_t",
            "max_extrapolation",
            "resolve_after",
            "severity",
            "summary",
        ];
        let t = self.fields(path, val, KEYS)?;
        let span = val.span();
        let name = self.name(t, &span, path, names);
        let metric = self.string(t, &span, path, "metric", true);
        let labels = self.labels(t, path);
        let limit = self.number(t, &span, path, "limit", true);
        let direction = match t.get("direction") {
            None => Some(Direction::Rising),
            Some(v) => match v.get_ref().as_str() {
                Some("rising") => Some(Direction::Rising),
                Some("falling") => Some(Direction::Falling),
                _ => {
                    self.problem(
                        v.span(),
                        format!("{path}.direction"),
                        "expected one of: \"rising\", \"falling\"",
                    );
                    None
                }
            },
        };
        let mut ok = true;
        let mut opt_dur = |cx: &mut Self, key: &str, default: Duration| {
            if t.contains_key(key) {
                let d = cx.duration(t, path, key);
                ok &= d.is_some();
                d.unwrap_or(default)
            } else {
                default
            }
        };
        let horizon = opt_dur(self, "horizon", DEFAULT_HORIZON);
        let lookback = opt_dur(self, "lookback", DEFAULT_LOOKBACK);
        let resolve_after = opt_dur(self, "resolve_after", DEFAULT_RESOLVE_AFTER);
        let min_points = if t.contains_key("min_points") {
            let m = self.integer(t, path, "min_points", 2);
            ok &= m.is_some();
            m.unwrap_or(DEFAULT_MIN_POINTS)
        } else {
            DEFAULT_MIN_POINTS
        };
        let mut ranged = |cx: &mut Self, key: &str, default: f64, lo: f64, hi: f64| -> f64 {
            match cx.number(t, &span, path, key, false) {
                None => {
                    ok &= !t.contains_key(key);
                    default
                }
                Some((x, s)) if x < lo || x > hi => {
                    cx.problem(
                        s,
                        format!("{path}.{key}"),
                        format!("must be in [{lo}, {hi}]"),
                    );
                    ok = false;
                    default
                }
                Some((x, _)) => x,
            }
        };
        let min_r2 = ranged(self, "min_r2", DEFAULT_MIN_R2, 0.0, 1.0);
        let min_t = ranged(self, "min_t", DEFAULT_MIN_T, 0.0, 1e6);
        let max_extrapolation = ranged(
            self,
            "max_extrapolation",
            DEFAULT_MAX_EXTRAPOLATION,
            0.0,
            1e6,
        );
        let severity = self.severity(t, &span, path);
        let summary = self.summary(t, &span, path, TREND_PLACEHOLDERS);
        if !ok {
            return None;
        }
        Some(TrendRule {
            name: name?,
            metric: metric?,
            labels: labels?,
            limit: limit?.0,
            direction: direction?,
            horizon,
            lookback,
            min_points,
            min_r2,
            min_t,
            max_extrapolation,
            resolve_after,
            severity: severity?,
            summary: summary?,
        })
    }

    /// The `name` of a singleton rule table, or `default` when absent.
    fn name_or(
        &mut self,
        t: &DeTable<'_>,
        span: &Range<usize>,
        path: &str,
        default: &str,
        names: &mut BTreeMap<String, NameSite>,
    ) -> Option<String> {
        if t.contains_key("name") {
            return self.name(t, span, path, names);
        }
        let n = default.to_string();
        if names.contains_key(&n) {
            self.problem(
                span.clone(),
                format!("{path}.name"),
                format!("default name {n:?} clashes with another rule"),
            );
            return None;
        }
        let (line, _) = self.line_col(span.start);
        names.insert(n.clone(), NameSite { line });
        Some(n)
    }

    fn offline(
        &mut self,
        path: &str,
        val: &Val<'_>,
        names: &mut BTreeMap<String, NameSite>,
    ) -> Option<OfflineRule> {
        const KEYS: &[&str] = &["name", "after", "severity"];
        let t = self.fields(path, val, KEYS)?;
        let span = val.span();
        let name = self.name_or(t, &span, path, DEFAULT_OFFLINE_NAME, names);
        let after = if t.contains_key("after") {
            self.duration(t, path, "after")
        } else {
            self.missing(span.clone(), path, "after");
            None
        };
        let severity = self.severity(t, &span, path);
        Some(OfflineRule {
            name: name?,
            after: after?,
            severity: severity?,
        })
    }

    fn invalid_input(
        &mut self,
        path: &str,
        val: &Val<'_>,
        names: &mut BTreeMap<String, NameSite>,
    ) -> Option<InvalidInputRule> {
        const KEYS: &[&str] = &["name", "batches", "after", "severity"];
        let t = self.fields(path, val, KEYS)?;
        let span = val.span();
        let name = self.name_or(t, &span, path, DEFAULT_INVALID_INPUT_NAME, names);
        let batches = if t.contains_key("batches") {
            self.integer(t, path, "batches", 1)
        } else {
            Some(DEFAULT_INVALID_BATCHES)
        };
        let after = if t.contains_key("after") {
            self.duration(t, path, "after")
        } else {
            Some(Duration::ZERO)
        };
        let severity = self.severity(t, &span, path);
        Some(InvalidInputRule {
            name: name?,
            batches: batches?,
            after: after?,
            severity: severity?,
        })
    }

    fn maintenance(&mut self, path: &str, val: &Val<'_>) -> Option<MaintenanceWindow> {
        const KEYS: &[&str] = &["tenant", "agent", "start", "end", "reason"];
        let t = self.fields(path, val, KEYS)?;
        let span = val.span();
        let tenant = self.string(t, &span, path, "tenant", true);
        let agent_ok = !t.contains_key("agent");
        let agent = self.string(t, &span, path, "agent", false);
        let reason = self.string(t, &span, path, "reason", false);
        let start = self.instant(t, &span, path, "start");
        let end = self.instant(t, &span, path, "end");
        if let (Some((s, _)), Some((e, espan))) = (start.clone(), end.clone()) {
            if e <= s {
                self.problem(espan, format!("{path}.end"), "must be after start");
                return None;
            }
        }
        if agent.is_none() && !agent_ok {
            return None;
        }
        Some(MaintenanceWindow {
            tenant: tenant?,
            agent,
            start_ms: start?.0,
            end_ms: end?.0,
            reason,
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
fn datetime_ms(d: &toml::value::Datetime) -> Result<i64, String> {
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats ms since the epoch as ISO-8601 UTC to the minute,
/// e.g. `2026-03-01T22:05Z`.
pub fn format_utc_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> RulesError {
        match RuleSet::from_toml(text, "rules.toml") {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn default_rules_parse() {
        let r = RuleSet::from_toml(DEFAULT_RULES_TOML, "config/rules.toml");
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r, RuleSet::default_rules());
        assert!(r.threshold.len() >= 6);
        assert_eq!(r.trend.len(), 1);
        assert_eq!(r.trend[0].limit, 100.0);
        assert_eq!(r.trend[0].horizon, Duration::from_secs(86_400));
        let off = r.offline.as_ref().map(|o| o.after);
        assert_eq!(off, Some(Duration::from_secs(600)));
        let inv = r.invalid_input.as_ref().map(|i| (i.batches, i.after));
        assert_eq!(inv, Some((5, Duration::from_secs(600))));
        let cpu = r.threshold.iter().find(|t| t.name == "cpu_high");
        assert!(
            matches!(cpu, Some(t) if t.for_windows == 5 && t.clear == 80.0 && t.op == CompareOp::Gt)
        );
    }

    #[test]
    fn rule_set_serde_round_trip() {
        let r = RuleSet::default_rules();
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: Result<RuleSet, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(r));
    }

    #[test]
    fn defaults_and_labels() {
        let r = RuleSet::from_toml(
            r#"
[[threshold]]
name = "t"
metric = "disk_used_pct"
labels = { mount = "/data" }
aggregate = "last"
op = ">="
value = 90
severity = "warning"

[[trend]]
name = "p"
metric = "disk_used_pct"
limit = 100
severity = "warning"
"#,
            "x",
        );
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let t = &r.threshold[0];
        assert_eq!((t.for_windows, t.clear, t.op), (1, 90.0, CompareOp::Ge));
        assert!(labels_match(&t.labels, "mount=/data"));
        assert!(labels_match(&t.labels, "dev=sda,mount=/data"));
        assert!(!labels_match(&t.labels, "mount=/"));
        let p = &r.trend[0];
        assert_eq!(
            (p.horizon, p.lookback, p.direction),
            (DEFAULT_HORIZON, DEFAULT_LOOKBACK, Direction::Rising)
        );
        assert!(r.offline.is_none());
    }

    #[test]
    fn every_problem_is_reported_with_line_column_and_path() {
        let text = r#"# rules
[[threshold]]
name = "cpu"
metric = "cpu_pct"
aggregate = "mean"
op = ">"
value = 90
clear = 80
severity = "warning"

[[threshold]]
name = "cpu"
metric = "cpu_pct"
aggregate = "median"
op = "=>"
value = 90
for = 0
clear = 95
severity = "urgent"
colour = "red"

[[trend]]
name = "fill"
metric = "disk_used_pct"
limit = 100
horizon = "0s"
lookback = "six hours"
min_r2 = 2
severity = "warning"

[offline]
after = 600

[bogus]
"#;
        let e = err(text);
        let got: Vec<String> = e.to_string().lines().map(str::to_string).collect();
        let want = [
            "rules.toml:12:8: threshold[1].name: duplicate rule name \"cpu\" (first defined on line 3)",
            "rules.toml:14:13: threshold[1].aggregate: expected one of: \"count\", \"sum\", \"min\", \"max\", \"mean\", \"last\"",
            "rules.toml:15:6: threshold[1].op: expected one of: \">\", \">=\", \"<\", \"<=\"",
            "rules.toml:17:7: threshold[1].for: must be >= 1",
            "rules.toml:19:12: threshold[1].severity: expected one of: \"info\", \"warning\", \"critical\"",
            "rules.toml:20:1: threshold[1].colour: unknown field (expected one of: name, metric, labels, aggregate, op, value, for, clear, clear_for, severity, summary)",
            "rules.toml:26:11: trend[0].horizon: must be > 0",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in\n{e}");
        }
        assert!(
            got.iter()
                .any(|g| g.starts_with("rules.toml:27:12: trend[0].lookback: invalid duration")),
            "{e}"
        );
        assert!(
            got.iter()
                .any(|g| g == "rules.toml:28:10: trend[0].min_r2: must be in [0, 1]"),
            "{e}"
        );
        assert!(
            got.iter().any(
                |g| g.starts_with("rules.toml:32:9: offline.after: expected a duration string")
            ),
            "{e}"
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("rules.toml:34:2: bogus: unknown key")),
            "{e}"
        );
        assert_eq!(e.problems.len(), got.len());
        assert!(e.problems.len() >= 11, "{e}");
        let p = &e.problems[0];
        assert_eq!(
            (p.line, p.column, p.path.as_str()),
            (12, 8, "threshold[1].name")
        );
        // sorted in file order
        assert!(e
            .problems
            .windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)));
    }

    #[test]
    fn invalid_input_rule_defaults_limits_and_name_clashes() {
        let r = RuleSet::from_toml("[invalid_input]\nseverity = \"warning\"\n", "x");
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            r.invalid_input,
            Some(InvalidInputRule {
                name: DEFAULT_INVALID_INPUT_NAME.into(),
                batches: DEFAULT_INVALID_BATCHES,
                after: Duration::ZERO,
                severity: Severity::Warning,
            })
        );
        let ok = RuleSet::from_toml(
            "[invalid_input]\nbatches = 1\nafter = \"5m\"\nseverity = \"info\"\n",
            "x",
        );
        assert!(
            matches!(&ok, Ok(r) if r.invalid_input.as_ref().is_some_and(|i| i.batches == 1 && i.after == Duration::from_secs(300))),
            "{ok:?}"
        );
        let e =
            err("[invalid_input]\nbatches = 0\nafter = \"0s\"\nseverity = \"info\"\ncolour = 1\n");
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "invalid_input.batches",
                "invalid_input.after",
                "invalid_input.colour"
            ],
            "{e}"
        );
        // A default name is taken like any other.
        let e = err("[offline]\nafter = \"10m\"\nseverity = \"info\"\n\n[[threshold]]\nname = \"agent_offline\"\nmetric = \"m\"\naggregate = \"last\"\nop = \">\"\nvalue = 1\nseverity = \"info\"\n");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(e.problems[0].message.contains("duplicate rule name"), "{e}");
    }

    #[test]
    fn same_definition_ignores_only_name_severity_and_summary() {
        let r = RuleSet::default_rules();
        let t = r.threshold[0].clone();
        let mut u = t.clone();
        u.name = "other".into();
        u.severity = Severity::Critical;
        u.summary = Some("x".into());
        assert!(t.same_definition(&u));
        for edit in [
            |u: &mut ThresholdRule| u.value += 1.0,
            |u: &mut ThresholdRule| u.clear -= 1.0,
            |u: &mut ThresholdRule| u.for_windows += 1,
            |u: &mut ThresholdRule| u.clear_for += 1,
            |u: &mut ThresholdRule| u.metric.push('x'),
            |u: &mut ThresholdRule| {
                u.labels.insert("k".into(), "v".into());
            },
            |u: &mut ThresholdRule| u.aggregate = AggregateKind::Count,
            |u: &mut ThresholdRule| u.op = CompareOp::Le,
        ] {
            let mut u = t.clone();
            edit(&mut u);
            assert!(!t.same_definition(&u), "{u:?}");
        }
        let p = r.trend[0].clone();
        let mut q = p.clone();
        q.severity = Severity::Info;
        assert!(p.same_definition(&q));
        q.lookback += Duration::from_secs(1);
        assert!(!p.same_definition(&q));
        let o = r
            .offline
            .clone()
            .unwrap_or_else(|| panic!("default offline rule"));
        let mut o2 = o.clone();
        o2.after += Duration::from_millis(1);
        assert!(!o.same_definition(&o2));
    }

    #[test]
    fn clear_for_limits() {
        let rule = |c: &str| {
            format!("[[threshold]]\nname = \"a\"\nmetric = \"m\"\naggregate = \"last\"\nop = \">\"\nvalue = 1\nclear_for = {c}\nseverity = \"critical\"\n")
        };
        for (c, msg) in [
            ("0", "must be >= 1"),
            ("65536", "must be <= 65535"),
            ("\"5m\"", "expected an integer, found string"),
        ] {
            let e = err(&rule(c));
            assert_eq!(e.problems.len(), 1, "{e}");
            assert_eq!(e.problems[0].path, "threshold[0].clear_for");
            assert_eq!((e.problems[0].line, e.problems[0].column), (7, 13));
            assert_eq!(e.problems[0].message, msg);
        }
        for (c, want) in [("1", 1), ("65535", 65535)] {
            let r = RuleSet::from_toml(&rule(c), "rules.toml").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.threshold[0].clear_for, want);
        }
        let r = RuleSet::from_toml(&rule("1").replace("clear_for = 1\n", ""), "rules.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.threshold[0].clear_for, DEFAULT_CLEAR_FOR);
    }

    #[test]
    fn clear_on_the_wrong_side_is_an_error() {
        let e = err(
            "[[threshold]]\nname = \"a\"\nmetric = \"m\"\naggregate = \"last\"\nop = \"<\"\nvalue = 1\nclear = 0.5\nseverity = \"critical\"\n",
        );
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].path, "threshold[0].clear");
        assert_eq!((e.problems[0].line, e.problems[0].column), (7, 9));
        assert!(e.problems[0].message.contains("safe side"), "{e}");
    }

    #[test]
    fn missing_fields_and_bad_summary() {
        let e = err("[[threshold]]\nname = \"a\"\nsummary = \"{metric} is {colour}\"\n");
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        for p in [
            "threshold[0].metric",
            "threshold[0].aggregate",
            "threshold[0].op",
            "threshold[0].value",
            "threshold[0].severity",
            "threshold[0].summary",
        ] {
            assert!(paths.contains(&p), "{p} not in {paths:?}");
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err("[[threshold]]\nname = \"a\nmetric = 1\n");
        assert!(!e.problems.is_empty());
        assert_eq!(e.problems[0].line, 2, "{e}");
    }

    #[test]
    fn maintenance_windows() {
        let r = RuleSet::from_toml(
            r#"
[[maintenance]]
tenant = "acme"
start = 2026-03-01T22:00:00Z
end = "2026-03-02T02:00:00+01:00"
reason = "CHG-1"

[[maintenance]]
tenant = "acme"
agent = "a1"
start = 0
end = 1000
"#,
            "m",
        );
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let start = days_from_civil(2026, 3, 1) * 86_400_000 + 22 * 3_600_000;
        assert_eq!(r.maintenance[0].start_ms, start);
        assert_eq!(r.maintenance[0].end_ms, start + 3 * 3_600_000);
        assert!(r.in_maintenance("acme", "x", start));
        assert!(!r.in_maintenance("acme", "x", start + 3 * 3_600_000));
        assert!(!r.in_maintenance("other", "x", start));
        assert!(r.in_maintenance("acme", "a1", 999));
        assert!(!r.in_maintenance("acme", "a2", 999));
        let e = err("[[maintenance]]\ntenant = \"t\"\nstart = 2026-03-01T22:00:00\nend = 5\n");
        assert_eq!(e.problems[0].path, "maintenance[0].start");
        let e = err("[[maintenance]]\ntenant = \"t\"\nstart = 10\nend = 5\n");
        assert_eq!(e.problems[0].path, "maintenance[0].end");
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 365, 20_000, 20_513, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_utc_minute(0), "1970-01-01T00:00Z");
        assert_eq!(format_utc_minute(1_772_402_700_000), "2026-03-01T22:05Z");
    }
}
