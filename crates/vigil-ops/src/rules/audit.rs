//! The audit side of the rules: a rule set's canonical form and digest,
//! the difference between two rule sets, and the optional `[meta]` table
//! of a rules file (who changed the rules, when, under which ticket).
//!
//! The `audit/` dataset (`vigil-store`) records, at every start of a
//! worker or replay, the digest of the rules in force and what changed
//! since the rule set recorded last; this module computes both and
//! nothing else (pure: no clock, no I/O).
//!
//! # Canonical form
//!
//! [`RulesSnapshot::of`] turns a validated [`RuleSet`] into a JSON value
//! that depends on the rules' meaning only, not on how the file spells
//! them:
//!
//! * it is built from the *parsed* rules, so comments, whitespace, key
//!   order inside a table, `90` vs `90.0`, `"5m"` vs `"300s"` and
//!   defaults left out vs spelled out (`clear` = `value`) do not show;
//! * object keys are sorted at every level (whatever map type
//!   `serde_json` is built with);
//! * the rules of each family are sorted by name (names are unique, and
//!   a rule's place in the file decides nothing), maintenance windows by
//!   their own canonical text;
//! * families without a rule are left out, so a Vigil version that adds
//!   a family does not change the digest of files that do not use it.
//!
//! The digest is [`DIGEST_ALGORITHM`] over the canonical text (compact
//! JSON, sorted keys), written `xxh3-128:<32 hex digits>`. It identifies a
//! rule set for change detection; it is not a signature (the audit row
//! keeps the canonical rules themselves).
//!
//! # Diff
//!
//! [`diff`] compares two canonical values (the previous one as read back
//! from storage, possibly written by another Vigil version, so it works on
//! JSON rather than on typed rules): per family, rules matched by name are
//! added, removed or changed (with the top-level fields that differ);
//! maintenance windows, which have no name, are matched exactly first,
//! then by (tenant, agent) in order, the rest added or removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::RuleSet;

/// Name of the hash of [`RulesSnapshot::digest`], also its prefix.
pub const DIGEST_ALGORITHM: &str = "xxh3-128";

/// Longest `[meta]` string, in characters.
pub const MAX_META_CHARS: usize = 512;

/// Key of the maintenance windows in the canonical form (and the family
/// name of their changes).
pub const MAINTENANCE: &str = "maintenance";

/// The `[meta]` table of a rules file: who changed the rules, under
/// which change ticket, when and why. Every field is optional; none of
/// them is part of the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesMeta {
    /// Who made the change (`changed_by`), e.g. an e-mail address.
    #[serde(default)]
    pub changed_by: Option<String>,
    /// Change ticket or review reference (`change_ref`).
    #[serde(default)]
    pub change_ref: Option<String>,
    /// When the change was made (`changed_at`), ms since the epoch.
    #[serde(default)]
    pub changed_at_ms: Option<i64>,
    /// Free text (`note`).
    #[serde(default)]
    pub note: Option<String>,
}

/// A rule set in canonical form with its digest.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesSnapshot {
    /// `xxh3-128:<32 hex digits>` of [`RulesSnapshot::text`].
    pub digest: String,
    /// The canonical form (module docs).
    pub rules: Value,
}

impl RulesSnapshot {
    /// The canonical form and digest of `rules`.
    pub fn of(rules: &RuleSet) -> RulesSnapshot {
        // A RuleSet is plain data (strings, numbers, maps with string
        // keys): serializing it cannot fail; should it, the empty object
        // still gives a valid (and conspicuous) digest.
        let value = serde_json::to_value(rules).unwrap_or(Value::Object(Map::new()));
        RulesSnapshot::from_value(&value)
    }

    /// The canonical form and digest of a rule set given as JSON (a
    /// [`RuleSet`] serialized, or a canonical form read back).
    pub fn from_value(value: &Value) -> RulesSnapshot {
        let rules = canonical(value);
        RulesSnapshot {
            digest: digest_of(&canonical_text(&rules)),
            rules,
        }
    }

    /// The canonical text: compact JSON with sorted keys.
    pub fn text(&self) -> String {
        canonical_text(&self.rules)
    }

    /// Rules in the set, over all families.
    pub fn rule_count(&self) -> usize {
        families(&self.rules)
            .map(|(_, rules)| rules.len())
            .sum::<usize>()
    }

    /// Maintenance windows in the set.
    pub fn maintenance_count(&self) -> usize {
        list(self.rules.get(MAINTENANCE)).len()
    }
}

/// `xxh3-128:<hex>` of `text`.
fn digest_of(text: &str) -> String {
    format!(
        "{DIGEST_ALGORITHM}:{:032x}",
        xxhash_rust::xxh3::xxh3_128(text.as_bytes())
    )
}

/// The canonical form of a serialized rule set (module docs).
fn canonical(value: &Value) -> Value {
    let Value::Object(top) = value else {
        return sort_keys(value);
    };
    let mut out = Map::new();
    for (key, v) in top {
        let mut items: Vec<Value> = list(Some(v)).into_iter().map(sort_keys).collect();
        if items.is_empty() {
            continue;
        }
        if key == MAINTENANCE {
            items.sort_by_cached_key(canonical_text);
        } else if v.is_array() {
            items.sort_by(|a, b| {
                rule_name(a)
                    .cmp(&rule_name(b))
                    .then_with(|| canonical_text(a).cmp(&canonical_text(b)))
            });
        } else {
            // An agent family: at most one rule, kept as an object.
            out.insert(key.clone(), items.swap_remove(0));
            continue;
        }
        out.insert(key.clone(), Value::Array(items));
    }
    Value::Object(out)
}

/// The rules of a family value: an array's items, an object as one rule,
/// nothing for null or absent.
fn list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// The families of a canonical value (every key but the maintenance
/// windows) with their rules.
fn families(v: &Value) -> impl Iterator<Item = (&str, Vec<&Value>)> {
    v.as_object()
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| k.as_str() != MAINTENANCE)
        .map(|(k, v)| (k.as_str(), list(Some(v))))
}

/// A rule's name (`name` field), or its canonical text when it has none.
fn rule_name(v: &Value) -> String {
    match v.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => canonical_text(v),
    }
}

/// `value` with the keys of every object sorted.
fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Compact JSON with the keys of every object written in sorted order
/// (independent of the map type's own order).
pub fn canonical_text(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = m.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What kind of change one audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A rule name appeared in a family.
    RuleAdded,
    /// A rule name left a family.
    RuleRemoved,
    /// A rule kept its name and family but not its definition.
    RuleChanged,
    /// A maintenance window appeared.
    MaintenanceAdded,
    /// A maintenance window went.
    MaintenanceRemoved,
    /// A maintenance window of the same tenant and agent changed.
    MaintenanceChanged,
}

impl ChangeKind {
    /// Every kind, in a stable order.
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::RuleAdded,
        ChangeKind::RuleRemoved,
        ChangeKind::RuleChanged,
        ChangeKind::MaintenanceAdded,
        ChangeKind::MaintenanceRemoved,
        ChangeKind::MaintenanceChanged,
    ];

    /// The name used as the audit row's `event` and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::RuleAdded => "rule_added",
            ChangeKind::RuleRemoved => "rule_removed",
            ChangeKind::RuleChanged => "rule_changed",
            ChangeKind::MaintenanceAdded => "maintenance_added",
            ChangeKind::MaintenanceRemoved => "maintenance_removed",
            ChangeKind::MaintenanceChanged => "maintenance_changed",
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between two rule sets.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleChange {
    /// What changed.
    pub kind: ChangeKind,
    /// The family's rules-file key (`threshold`, `offline`, ...), or
    /// `maintenance`.
    pub family: String,
    /// The rule's name; for a maintenance window `tenant` or
    /// `tenant/agent`.
    pub name: String,
    /// The top-level fields whose values differ, sorted (changes only).
    pub fields: Vec<String>,
    /// The rule before (canonical JSON), `None` when added.
    pub before: Option<Value>,
    /// The rule after (canonical JSON), `None` when removed.
    pub after: Option<Value>,
}

/// The changes from the canonical rule set `before` to `after` (module
/// docs): rule changes by family (sorted by key) then name, then
/// maintenance window changes. Empty when the two are equal.
pub fn diff(before: &Value, after: &Value) -> Vec<RuleChange> {
    let (before, after) = (canonical(before), canonical(after));
    let mut out = Vec::new();
    let fam = |v: &Value| -> BTreeMap<String, BTreeMap<String, Value>> {
        families(v)
            .map(|(k, rules)| {
                let by_name = rules
                    .into_iter()
                    .map(|r| (rule_name(r), r.clone()))
                    .collect();
                (k.to_owned(), by_name)
            })
            .collect()
    };
    let (old, new) = (fam(&before), fam(&after));
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let empty = BTreeMap::new();
    for key in keys {
        let o = old.get(key).unwrap_or(&empty);
        let n = new.get(key).unwrap_or(&empty);
        let names: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for name in names {
            let change = match (o.get(name), n.get(name)) {
                (Some(a), Some(b)) if a == b => continue,
                (Some(a), Some(b)) => (ChangeKind::RuleChanged, Some(a), Some(b)),
                (None, Some(b)) => (ChangeKind::RuleAdded, None, Some(b)),
                (Some(a), None) => (ChangeKind::RuleRemoved, Some(a), None),
                (None, None) => continue,
            };
            out.push(change_of(change, key, name.clone()));
        }
    }
    maintenance_diff(
        list(before.get(MAINTENANCE)),
        list(after.get(MAINTENANCE)),
        &mut out,
    );
    out
}

fn change_of(
    (kind, before, after): (ChangeKind, Option<&Value>, Option<&Value>),
    family: &str,
    name: String,
) -> RuleChange {
    let fields = match (before, after) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    RuleChange {
        kind,
        family: family.to_owned(),
        name,
        fields,
        before: before.cloned(),
        after: after.cloned(),
    }
}

/// A maintenance window's identity: `tenant` or `tenant/agent`.
fn window_name(w: &Value) -> String {
    let tenant = w.get("tenant").and_then(Value::as_str).unwrap_or("");
    match w.get("agent").and_then(Value::as_str) {
        Some(a) => format!("{tenant}/{a}"),
        None => tenant.to_owned(),
    }
}

fn maintenance_diff(before: Vec<&Value>, after: Vec<&Value>, out: &mut Vec<RuleChange>) {
    // Exact matches (as a multiset) are unchanged.
    let mut old: Vec<Option<&Value>> = before.into_iter().map(Some).collect();
    let mut added: Vec<&Value> = Vec::new();
    for w in after {
        match old.iter_mut().find(|o| *o == &Some(w)) {
            Some(slot) => *slot = None,
            None => added.push(w),
        }
    }
    let mut removed: Vec<&Value> = old.into_iter().flatten().collect();
    // Then the same tenant and agent, in canonical order: changed.
    let mut rest = Vec::new();
    for w in added {
        let name = window_name(w);
        match removed.iter().position(|o| window_name(o) == name) {
            Some(i) => {
                let o = removed.remove(i);
                out.push(change_of(
                    (ChangeKind::MaintenanceChanged, Some(o), Some(w)),
                    MAINTENANCE,
                    name,
                ));
            }
            None => rest.push(w),
        }
    }
    for w in rest {
        out.push(change_of(
            (ChangeKind::MaintenanceAdded, None, Some(w)),
            MAINTENANCE,
            window_name(w),
        ));
    }
    for o in removed {
        out.push(change_of(
            (ChangeKind::MaintenanceRemoved, Some(o), None),
            MAINTENANCE,
            window_name(o),
        ));
    }
}

/// Counts of changes by kind, in [`ChangeKind::ALL`] order (for a log
/// line or a summary).
pub fn summarize(changes: &[RuleChange]) -> Vec<(ChangeKind, usize)> {
    ChangeKind::ALL
        .iter()
        .map(|k| (*k, changes.iter().filter(|c| c.kind == *k).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[threshold]]
name = "cpu_high"
metric = "cpu_pct"
aggregate = "mean"
op = ">"
value = 90
for = 5
clear = 80
severity = "warning"

[[threshold]]
name = "mem_high"
metric = "mem_pct"
aggregate = "mean"
op = ">"
value = 95
severity = "warning"

[offline]
after = "10m"
severity = "critical"

[[maintenance]]
tenant = "acme"
start = 2026-03-01T22:00:00Z
end = 2026-03-02T02:00:00Z
reason = "CHG-1"
"#;

    /// The same rules: rules and keys reordered, comments, other
    /// spellings of the same numbers and durations, a default spelled out.
    const REORDERED: &str = r#"
# maintenance first this time
[[maintenance]]
reason = "CHG-1"
end = 2026-03-02T02:00:00Z   # four hours
start = 2026-03-01T22:00:00Z
tenant = "acme"

[offline]
severity = "critical"
after = "600s"

[[threshold]]
severity = "warning"
name = "mem_high"
metric = "mem_pct"
value = 95.0
op = ">"
aggregate = "mean"
clear = 95
for = 1

[[threshold]]
  name="cpu_high"
  metric="cpu_pct"
  aggregate="mean"
  op=">"
  value=90
  for=5
  clear=80
  severity="warning"
"#;

    fn snap(text: &str) -> RulesSnapshot {
        match RuleSet::from_toml(text, "rules.toml") {
            Ok(r) => RulesSnapshot::of(&r),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn digest_ignores_spelling_order_and_comments() {
        let (a, b) = (snap(BASE), snap(REORDERED));
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.text(), b.text());
        assert!(a.digest.starts_with("xxh3-128:") && a.digest.len() == 9 + 32);
        assert_eq!((a.rule_count(), a.maintenance_count()), (3, 1));
        assert!(diff(&a.rules, &b.rules).is_empty());
    }

    #[test]
    fn digest_changes_with_any_semantic_change() {
        let base = snap(BASE).digest;
        let edits = [
            ("value = 90\n", "value = 91\n"),
            ("for = 5", "for = 6"),
            (
                "severity = \"warning\"\n\n[[threshold]]",
                "severity = \"critical\"\n\n[[threshold]]",
            ),
            ("after = \"10m\"", "after = \"11m\""),
            ("reason = \"CHG-1\"", "reason = \"CHG-2\""),
            ("name = \"mem_high\"", "name = \"memory_high\""),
        ];
        for (from, to) in edits {
            assert!(BASE.contains(from), "{from}");
            let edited = snap(&BASE.replacen(from, to, 1)).digest;
            assert_ne!(edited, base, "{from} -> {to}");
        }
    }

    #[test]
    fn meta_is_not_part_of_the_digest() {
        let with_meta = format!(
            "[meta]\nchanged_by = \"ops@example.com\"\nchange_ref = \"CHG-7\"\n\
             changed_at = 2026-12-01T10:00:00Z\nnote = \"raise cpu\"\n{BASE}"
        );
        let (rules, meta) = match RuleSet::from_toml_with_meta(&with_meta, "rules.toml") {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(RulesSnapshot::of(&rules).digest, snap(BASE).digest);
        assert_eq!(meta.changed_by.as_deref(), Some("ops@example.com"));
        assert_eq!(meta.change_ref.as_deref(), Some("CHG-7"));
        assert_eq!(meta.changed_at_ms, Some(1_796_119_200_000));
        assert_eq!(meta.note.as_deref(), Some("raise cpu"));
        let none = RuleSet::from_toml_with_meta(BASE, "rules.toml").map(|(_, m)| m);
        assert_eq!(none.ok(), Some(RulesMeta::default()));
    }

    #[test]
    fn meta_errors_have_positions_and_are_all_reported() {
        let text = format!(
            "[meta]\nchanged_by = \"\"\nchange_ref = 7\nchanged_at = \"yesterday\"\nwho = \"x\"\n\
             note = \"{}\"\n{BASE}",
            "n".repeat(MAX_META_CHARS + 1)
        );
        let e = match RuleSet::from_toml(&text, "rules.toml") {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        for want in [
            "rules.toml:2:14: meta.changed_by: must not be empty",
            "rules.toml:3:14: meta.change_ref: expected a string",
            "rules.toml:4:14: meta.changed_at: invalid RFC 3339 date-time",
            "rules.toml:5:1: meta.who: unknown field",
            "rules.toml:6:8: meta.note: must be at most 512 characters",
        ] {
            assert!(e.contains(want), "missing {want:?} in\n{e}");
        }
        let e = RuleSet::from_toml("meta = 3\n", "r.toml").map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("r.toml:1:8: meta: expected a table")),
            "{e:?}"
        );
    }

    #[test]
    fn diff_names_rules_families_and_fields() {
        let before = snap(BASE);
        let edited = BASE
            .replacen("value = 90\n", "value = 92\n", 1)
            .replacen("for = 5", "for = 3", 1)
            .replace(
                "[[threshold]]\nname = \"mem_high\"\nmetric = \"mem_pct\"\naggregate = \"mean\"\nop = \">\"\nvalue = 95\nseverity = \"warning\"\n",
                "[[trend]]\nname = \"disk_fill\"\nmetric = \"disk_used_pct\"\nlimit = 100\nseverity = \"warning\"\n",
            )
            .replace("[offline]\nafter = \"10m\"\nseverity = \"critical\"\n", "")
            .replace("end = 2026-03-02T02:00:00Z", "end = 2026-03-02T03:00:00Z")
            + "\n[[maintenance]]\ntenant = \"globex\"\nagent = \"db-1\"\nstart = 2026-04-01T00:00:00Z\nend = 2026-04-01T01:00:00Z\n";
        let after = snap(&edited);
        let changes = diff(&before.rules, &after.rules);
        let got: Vec<(ChangeKind, &str, &str, Vec<&str>)> = changes
            .iter()
            .map(|c| {
                (
                    c.kind,
                    c.family.as_str(),
                    c.name.as_str(),
                    c.fields.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (ChangeKind::RuleRemoved, "offline", "agent_offline", vec![]),
                (
                    ChangeKind::RuleChanged,
                    "threshold",
                    "cpu_high",
                    vec!["for", "value"]
                ),
                (ChangeKind::RuleRemoved, "threshold", "mem_high", vec![]),
                (ChangeKind::RuleAdded, "trend", "disk_fill", vec![]),
                (
                    ChangeKind::MaintenanceChanged,
                    "maintenance",
                    "acme",
                    vec!["end_ms"]
                ),
                (
                    ChangeKind::MaintenanceAdded,
                    "maintenance",
                    "globex/db-1",
                    vec![]
                ),
            ]
        );
        let cpu = &changes[1];
        assert_eq!(
            cpu.before.as_ref().and_then(|b| b.get("value")),
            Some(&Value::from(90.0))
        );
        assert_eq!(
            cpu.after.as_ref().and_then(|a| a.get("value")),
            Some(&Value::from(92.0))
        );
        assert!(changes[0].after.is_none() && changes[3].before.is_none());
        // Back again: the inverse changes.
        let back = diff(&after.rules, &before.rules);
        assert_eq!(back.len(), changes.len());
        assert_eq!(
            summarize(&back),
            vec![
                (ChangeKind::RuleAdded, 2),
                (ChangeKind::RuleRemoved, 1),
                (ChangeKind::RuleChanged, 1),
                (ChangeKind::MaintenanceRemoved, 1),
                (ChangeKind::MaintenanceChanged, 1),
            ]
        );
    }

    #[test]
    fn canonical_form_survives_a_round_trip_through_text() {
        let s = snap(BASE);
        let back: Value = match serde_json::from_str(&s.text()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let again = RulesSnapshot::from_value(&back);
        assert_eq!(again.digest, s.digest);
        assert!(diff(&back, &s.rules).is_empty());
        // The empty set against the defaults: every default rule added.
        let defaults = RulesSnapshot::of(&RuleSet::default_rules());
        let all = diff(&Value::Null, &defaults.rules);
        assert_eq!(
            all.len(),
            defaults.rule_count() + defaults.maintenance_count()
        );
        assert!(all.iter().all(|c| c.kind == ChangeKind::RuleAdded));
    }
}
