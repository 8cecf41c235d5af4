//! Alert rules: the TOML file format, its validation, and the embedded
//! default rule set (`config/rules.toml`).
//!
//! This module owns the *configuration* side of detection that is shared
//! by every detector family: the [`RuleSet`] (one field per family, laid
//! out by the registry in [`crate::detect::registry`]), the maintenance
//! windows, the error type and the walker that reads a file
//! ([`read`]). Each family's rule type, defaults and section reader live
//! in the family's own module under [`crate::detect`] and are re-exported
//! here. Calendar helpers are in [`calendar`]. It holds no detector state.
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

use serde::{Deserialize, Serialize};

pub mod audit;
pub mod calendar;
pub mod read;

pub use audit::{ChangeKind, RuleChange, RulesMeta, RulesSnapshot};

pub use crate::detect::invalid_input::{
    InvalidInputRule, DEFAULT_INVALID_BATCHES, DEFAULT_INVALID_INPUT_NAME,
};
pub use crate::detect::offline::{OfflineRule, DEFAULT_OFFLINE_NAME};
pub use crate::detect::registry::RuleSet;
pub use crate::detect::threshold::{
    CompareOp, ThresholdRule, DEFAULT_CLEAR_FOR, DEFAULT_FOR, THRESHOLD_PLACEHOLDERS,
};
pub use crate::detect::trend::{
    Direction, TrendRule, DEFAULT_HORIZON, DEFAULT_LOOKBACK, DEFAULT_MAX_EXTRAPOLATION,
    DEFAULT_MIN_POINTS, DEFAULT_MIN_R2, DEFAULT_MIN_T, DEFAULT_RESOLVE_AFTER, TREND_PLACEHOLDERS,
};
pub use calendar::{civil_from_days, days_from_civil, format_utc_minute};

/// The default rules file, embedded at build time.
pub const DEFAULT_RULES_TOML: &str = include_str!("../../../../config/rules.toml");

/// A maintenance window (`[[maintenance]]`): alerts whose event time falls
/// in `[start_ms, end_ms)` for the tenant (and agent, if given) are emitted
/// with `suppressed = true`. A recurring window ([`Recurrence`], e.g. a
/// weekly patch night in the tenant's time zone) covers only its
/// occurrences, between `start_ms` and `end_ms` when given.
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
    /// The occurrences of a recurring window (`None`: one window,
    /// `[start_ms, end_ms)`).
    #[serde(default)]
    pub every: Option<Recurrence>,
}

/// The occurrences of a recurring maintenance window: at a local time on
/// some weekdays, for a duration, in an IANA time zone (daylight saving
/// time included: 22:00 stays 22:00 local all year).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    /// IANA time zone name of `at` (`UTC` by default).
    pub time_zone: String,
    /// Weekdays an occurrence starts on (`mon` .. `sun`); every day when
    /// empty.
    pub days: Vec<String>,
    /// Local start time, minutes after midnight (0 ..= 1439).
    pub at_min: u32,
    /// Length of each occurrence in ms (at most 7 days).
    pub duration_ms: i64,
}

/// The longest occurrence of a recurring window.
pub const MAX_OCCURRENCE_MS: i64 = 7 * 86_400_000;

impl Recurrence {
    /// Whether an occurrence covers `t_ms`: one that starts on a listed
    /// day at `at` local time, at most `duration` before `t_ms`.
    pub fn covers(&self, t_ms: i64) -> bool {
        use chrono::{Datelike as _, TimeZone as _};
        let tz: chrono_tz::Tz = self.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC);
        let Some(t) = chrono::Utc.timestamp_millis_opt(t_ms).single() else {
            return false;
        };
        let today = t.with_timezone(&tz).date_naive();
        let back = (self.duration_ms.clamp(0, MAX_OCCURRENCE_MS) + 86_399_999) / 86_400_000;
        // One more day back: a UTC offset change can move a start across
        // local midnight relative to `t`.
        (0..=back + 1).any(|k| {
            let Some(day) = today.checked_sub_days(chrono::Days::new(k as u64)) else {
                return false;
            };
            let listed = self.days.is_empty()
                || self
                    .days
                    .iter()
                    .any(|d| calendar::weekday_named(d) == Some(day.weekday()));
            let Some(local) = day.and_hms_opt(self.at_min / 60, self.at_min % 60, 0) else {
                return false;
            };
            listed
                && calendar::local_instant_ms(tz, local)
                    .is_some_and(|s| s <= t_ms && t_ms < s.saturating_add(self.duration_ms))
        })
    }
}

impl MaintenanceWindow {
    /// True when this window covers an event of `tenant`/`agent` at `t_ms`.
    pub fn covers(&self, tenant: &str, agent: &str, t_ms: i64) -> bool {
        self.tenant == tenant
            && self.agent.as_deref().is_none_or(|a| a == agent)
            && self.start_ms <= t_ms
            && t_ms < self.end_ms
            && self.every.as_ref().is_none_or(|r| r.covers(t_ms))
    }
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
    /// Every problem is reported at once. The file's `[meta]` table is
    /// validated and dropped (see [`RuleSet::from_toml_with_meta`]).
    pub fn from_toml(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        read::Cx::read(text, origin).map(|(set, _)| set)
    }

    /// [`RuleSet::from_toml`], also returning the file's `[meta]` table
    /// (who changed the rules, when, why: recorded in the `audit/`
    /// dataset at start; empty when the file has none). The metadata is
    /// not part of the rules: it changes neither detection nor
    /// [`RulesSnapshot::digest`].
    pub fn from_toml_with_meta(
        text: &str,
        origin: &str,
    ) -> Result<(RuleSet, RulesMeta), RulesError> {
        read::Cx::read(text, origin)
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

#[cfg(test)]
mod tests;
