//! Rules-file tests: validation messages and positions, defaults, rule
//! definitions.

use std::time::Duration;

use super::*;
use crate::detect::registry::FamilyRule;
use crate::model::{AggregateKind, Severity};

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
        got.iter()
            .any(|g| g.starts_with("rules.toml:32:9: offline.after: expected a duration string")),
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
    let e = err("[invalid_input]\nbatches = 0\nafter = \"0s\"\nseverity = \"info\"\ncolour = 1\n");
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

/// ms of a UTC date-time.
fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
    days_from_civil(y, mo, d) * 86_400_000 + h * 3_600_000 + mi * 60_000
}

/// A weekly patch night, Saturday 22:00 to Sunday 02:00 in Berlin, follows
/// the local clock across daylight saving time: 21:00Z in summer (UTC+2 →
/// 20:00Z) and winter (UTC+1 → 21:00Z), exact at both edges.
#[test]
fn recurring_maintenance_windows_follow_the_tenants_clock() {
    let r = RuleSet::from_toml(
        r#"
[[maintenance]]
tenant = "acme"
at = "22:00"
days = ["sat"]
duration = "4h"
time_zone = "Europe/Berlin"
reason = "patch night"
start = 2026-01-01T00:00:00Z
"#,
        "m",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let covered = |t: i64| r.in_maintenance("acme", "a1", t);
    // Saturday 2026-07-04, CEST (UTC+2): 20:00Z .. 00:00Z.
    let summer = utc(2026, 7, 4, 20, 0);
    assert!(!covered(summer - 1));
    assert!(covered(summer));
    assert!(covered(summer + 4 * 3_600_000 - 1));
    assert!(!covered(summer + 4 * 3_600_000));
    // Saturday 2026-11-07, CET (UTC+1): 21:00Z .. 01:00Z (Sunday).
    let winter = utc(2026, 11, 7, 21, 0);
    assert!(!covered(winter - 1));
    assert!(covered(winter));
    assert!(covered(winter + 4 * 3_600_000 - 1));
    assert!(!covered(winter + 4 * 3_600_000));
    // Not on other days, nor before the bound, nor for other tenants.
    assert!(!covered(utc(2026, 11, 6, 21, 30)));
    assert!(!covered(utc(2025, 11, 8, 21, 30)));
    assert!(!r.in_maintenance("globex", "a1", winter));
    // The night clocks go forward (2026-03-29 02:00 → 03:00 local) and
    // back (2026-10-25): a daily 02:30 window of 1 h.
    let r = RuleSet::from_toml(
        "[[maintenance]]\ntenant = \"t\"\nat = \"02:30\"\nduration = \"1h\"\ntime_zone = \"Europe/Berlin\"\n",
        "m",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // 02:30 does not exist on 2026-03-29: the occurrence starts when the
    // gap ends, 03:00 CEST = 01:00Z.
    assert!(!r.in_maintenance("t", "a", utc(2026, 3, 29, 0, 59)));
    assert!(r.in_maintenance("t", "a", utc(2026, 3, 29, 1, 0)));
    assert!(!r.in_maintenance("t", "a", utc(2026, 3, 29, 2, 0)));
    // 02:30 occurs twice on 2026-10-25: the first, 02:30 CEST = 00:30Z.
    assert!(r.in_maintenance("t", "a", utc(2026, 10, 25, 0, 30)));
    assert!(!r.in_maintenance("t", "a", utc(2026, 10, 25, 0, 29)));
    // An ordinary day: 02:30 CET = 01:30Z.
    assert!(r.in_maintenance("t", "a", utc(2026, 11, 2, 1, 30)));
    assert!(!r.in_maintenance("t", "a", utc(2026, 11, 2, 2, 30)));
}

#[test]
fn recurring_maintenance_windows_are_validated() {
    for (toml, want) in [
        ("at = \"25:00\"\nduration = \"1h\"", "m[0].at"),
        ("at = \"22:00\"", "m[0].duration: missing required field"),
        ("at = \"22:00\"\nduration = \"8d\"", "at most 7 days"),
        (
            "at = \"22:00\"\nduration = \"1h\"\ndays = [\"sab\"]",
            "m[0].days[0]",
        ),
        (
            "at = \"22:00\"\nduration = \"1h\"\ndays = []",
            "non-empty array",
        ),
        (
            "at = \"22:00\"\nduration = \"1h\"\ntime_zone = \"Mars/Olympus\"",
            "unknown time zone",
        ),
        (
            "start = 0\nend = 5\ndays = [\"sat\"]",
            "only for a recurring window",
        ),
    ] {
        let text =
            format!("[[maintenance]]\ntenant = \"t\"\n{toml}\n").replace("m[0]", "maintenance[0]");
        let e = err(&text).to_string();
        let want = want.replace("m[0]", "maintenance[0]");
        assert!(e.contains(&want), "{toml}: {e}");
    }
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

proptest::proptest! {
    /// In UTC a daily window is plain arithmetic: `t` is covered exactly
    /// when its time of day lies in `[at, at + duration)`, wrapping past
    /// midnight; weekday lists pick the occurrences by their start day.
    #[test]
    fn recurring_windows_in_utc_match_arithmetic(
        t in 0i64..4_000_000_000_000,
        at_min in 0u32..1440,
        duration_ms in 1i64..(3 * 86_400_000),
        weekly in proptest::bool::ANY,
    ) {
        let r = crate::rules::Recurrence {
            time_zone: "UTC".into(),
            days: if weekly { vec!["wed".into()] } else { Vec::new() },
            at_min,
            duration_ms,
        };
        const DAY: i64 = 86_400_000;
        let at = i64::from(at_min) * 60_000;
        // The latest start at or before t, and the ones before it.
        let mut start = t.div_euclid(DAY) * DAY + at;
        if start > t {
            start -= DAY;
        }
        let want = (0..=3).any(|k| {
            let s = start - k * DAY;
            // 1970-01-01 was a Thursday: with Monday as 0, day d of the
            // epoch is weekday (d + 3) mod 7, and Wednesday is 2.
            let wed = (s.div_euclid(DAY) + 3).rem_euclid(7) == 2;
            (!weekly || wed) && s <= t && t < s + duration_ms
        });
        proptest::prop_assert_eq!(r.covers(t), want);
    }
}
