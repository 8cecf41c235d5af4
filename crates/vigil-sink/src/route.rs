//! Alert routing: which destinations (topic and encoding) each alert event
//! goes to, configured as `[alerts]` in TOML:
//!
//! ```toml
//! [alerts.default]             # events that no route matches
//! topic = ""                   # empty: kafka.alert_topic
//! encoding = "json"
//!
//! [[alerts.route]]
//! name = "soc-critical"        # the metric label; unique
//! topic = "soc.critical"
//! encoding = "ocsf"            # json, ocsf, cef, ecs
//! severity = ["critical"]      # each list: empty or absent = any
//! tenant = ["acme"]
//! rule = []
//! status = ["firing", "resolved"]
//! suppressed = "exclude"       # exclude (default), include or only
//! ```
//!
//! An event goes to every route it matches, in configuration order, and to
//! the default route when it matches none. A route matches when every
//! non-empty list holds the event's value; maintenance-suppressed events
//! follow the route's own `suppressed` rule (by default a route does not
//! take them, so they reach the default route, as before routes existed).
//! The record key is always the alert's fingerprint, whatever the route.
//! Each event sent on a route is counted in [`ROUTE_EVENTS`]`{route}`.
//!
//! [`AlertSettings::validate`] reports every problem with its TOML path;
//! [`AlertSettings::router`] builds the [`AlertRouter`].

use serde::{Deserialize, Serialize};
use vigil_ops::model::{AlertEvent, AlertStatus, Severity};

use crate::encoding::{encoding, encoding_names, Encoding};

/// Alert events sent on a route, label `route` (the route's name, from
/// the configuration: a closed set).
pub const ROUTE_EVENTS: &str = "vigil_alert_route_events_total";

/// Name of the default route.
pub const DEFAULT_ROUTE: &str = "default";

/// The `[alerts]` configuration table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Where events that no route matches go.
    pub default: DefaultRouteSettings,
    /// The routes, in order (`[[alerts.route]]`).
    #[serde(default)]
    pub route: Vec<RouteSettings>,
    /// Replays (`vigil ingest`, `vigil demo`) also write each route's
    /// events to files under `<data_dir>/routes/<route>/`
    /// ([`crate::RouteFiles`]); off by default.
    #[serde(default)]
    pub replay_files: bool,
}

/// `[alerts.default]`: the route of events that no other route matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteSettings {
    /// Topic; empty for `kafka.alert_topic`.
    #[serde(default)]
    pub topic: String,
    /// Encoding name.
    pub encoding: String,
}

/// Which maintenance-suppressed events a route takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressedMatch {
    /// Only events that were not suppressed (the default).
    #[default]
    Exclude,
    /// Suppressed and not suppressed events.
    Include,
    /// Only suppressed events.
    Only,
}

impl SuppressedMatch {
    fn matches(self, suppressed: bool) -> bool {
        match self {
            SuppressedMatch::Exclude => !suppressed,
            SuppressedMatch::Include => true,
            SuppressedMatch::Only => suppressed,
        }
    }
}

/// One `[[alerts.route]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Unique name (the metric label; letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// Destination topic.
    pub topic: String,
    /// Encoding name (default `json`).
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Severities taken (`info`, `warning`, `critical`); empty: any.
    #[serde(default)]
    pub severity: Vec<String>,
    /// Tenants taken; empty: any.
    #[serde(default)]
    pub tenant: Vec<String>,
    /// Rule names taken; empty: any.
    #[serde(default)]
    pub rule: Vec<String>,
    /// Statuses taken (`firing`, `resolved`); empty: both.
    #[serde(default)]
    pub status: Vec<String>,
    /// Suppressed events: `exclude` (default), `include` or `only`.
    #[serde(default)]
    pub suppressed: SuppressedMatch,
}

fn default_encoding() -> String {
    "json".into()
}

fn parse_severity(s: &str) -> Option<Severity> {
    [Severity::Info, Severity::Warning, Severity::Critical]
        .into_iter()
        .find(|x| x.as_str() == s)
}

fn parse_status(s: &str) -> Option<AlertStatus> {
    [AlertStatus::Firing, AlertStatus::Resolved]
        .into_iter()
        .find(|x| x.as_str() == s)
}

fn valid_name(n: &str) -> bool {
    n.len() <= 64
        && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl AlertSettings {
    /// Checks the table; returns every problem as `alerts.<path>: ...`.
    pub fn validate(&self) -> Vec<String> {
        match self.build("rmm.alerts.v1") {
            Ok(_) => Vec::new(),
            Err(p) => p,
        }
    }

    /// The router; `alert_topic` is the default route's topic when
    /// `alerts.default.topic` is empty. Errors: every problem, as
    /// [`AlertSettings::validate`].
    pub fn router(&self, alert_topic: &str) -> Result<AlertRouter, Vec<String>> {
        self.build(alert_topic)
    }

    /// Every destination topic (the default route's included), in route
    /// order, without repetition.
    pub fn topics<'a>(&'a self, alert_topic: &'a str) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        let default = if self.default.topic.is_empty() {
            alert_topic
        } else {
            &self.default.topic
        };
        for t in self.route.iter().map(|r| r.topic.as_str()).chain([default]) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    fn build(&self, alert_topic: &str) -> Result<AlertRouter, Vec<String>> {
        let mut p = Vec::new();
        let known = || encoding_names().join(", ");
        let enc = |path: &str, name: &str, p: &mut Vec<String>| match encoding(name) {
            Some(e) => Some(e),
            None => {
                p.push(format!(
                    "{path}.encoding: unknown encoding \"{name}\" (known: {})",
                    known()
                ));
                None
            }
        };
        let default_topic = if self.default.topic.is_empty() {
            alert_topic
        } else {
            &self.default.topic
        };
        let default_enc = enc("alerts.default", &self.default.encoding, &mut p);
        let mut routes = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (i, r) in self.route.iter().enumerate() {
            let path = format!("alerts.route[{i}]");
            if !valid_name(&r.name) {
                p.push(format!(
                    "{path}.name: \"{}\" must be 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit",
                    r.name
                ));
            } else if r.name == DEFAULT_ROUTE {
                p.push(format!(
                    "{path}.name: \"{DEFAULT_ROUTE}\" is the default route's name ([alerts.default])"
                ));
            } else if names.contains(&r.name.as_str()) {
                p.push(format!(
                    "{path}.name: \"{}\" is used by another route",
                    r.name
                ));
            }
            names.push(&r.name);
            if r.topic.is_empty() {
                p.push(format!("{path}.topic: must not be empty"));
            }
            let e = enc(&path, &r.encoding, &mut p);
            let mut severity = Vec::new();
            for s in &r.severity {
                match parse_severity(s) {
                    Some(s) => severity.push(s),
                    None => p.push(format!(
                        "{path}.severity: unknown severity \"{s}\" (info, warning, critical)"
                    )),
                }
            }
            let mut status = Vec::new();
            for s in &r.status {
                match parse_status(s) {
                    Some(s) => status.push(s),
                    None => p.push(format!(
                        "{path}.status: unknown status \"{s}\" (firing, resolved)"
                    )),
                }
            }
            for (field, list) in [("tenant", &r.tenant), ("rule", &r.rule)] {
                if list.iter().any(String::is_empty) {
                    p.push(format!("{path}.{field}: empty name"));
                }
            }
            if let Some(e) = e {
                routes.push(Route {
                    name: r.name.clone(),
                    topic: r.topic.clone(),
                    encoding: e,
                    filter: Filter {
                        severity,
                        tenant: r.tenant.clone(),
                        rule: r.rule.clone(),
                        status,
                        suppressed: r.suppressed,
                    },
                });
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(AlertRouter {
            routes,
            default: default_enc.map(|e| Route::new(DEFAULT_ROUTE, default_topic, e)),
        })
    }
}

/// What a route takes (empty lists: any).
#[derive(Debug, Clone, Default, PartialEq)]
struct Filter {
    severity: Vec<Severity>,
    tenant: Vec<String>,
    rule: Vec<String>,
    status: Vec<AlertStatus>,
    suppressed: SuppressedMatch,
}

impl Filter {
    fn matches(&self, a: &AlertEvent) -> bool {
        (self.severity.is_empty() || self.severity.contains(&a.severity))
            && (self.status.is_empty() || self.status.contains(&a.status))
            && (self.tenant.is_empty() || self.tenant.contains(&a.tenant))
            && (self.rule.is_empty() || self.rule.contains(&a.rule))
            && self.suppressed.matches(a.suppressed)
    }
}

/// One route: where matching alert events go, and how they are encoded.
pub struct Route {
    name: String,
    topic: String,
    encoding: &'static dyn Encoding,
    filter: Filter,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("encoding", &self.encoding.name())
            .field("filter", &self.filter)
            .finish()
    }
}

impl Route {
    /// A route named `name` to `topic`, encoded as `encoding`, taking
    /// every event (suppressed ones included).
    pub fn new(name: &str, topic: &str, encoding: &'static dyn Encoding) -> Route {
        Route {
            name: name.to_string(),
            topic: topic.to_string(),
            encoding,
            filter: Filter {
                suppressed: SuppressedMatch::Include,
                ..Filter::default()
            },
        }
    }

    /// The route's name (the metric label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Destination: a Kafka topic for the worker; replays name their files
    /// after the route instead.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The encoding of the events on this route.
    pub fn encoding(&self) -> &'static dyn Encoding {
        self.encoding
    }

    /// Whether the route takes `a`.
    pub fn matches(&self, a: &AlertEvent) -> bool {
        self.filter.matches(a)
    }
}

/// The routes of alert events. See the module docs.
#[derive(Debug, Default)]
pub struct AlertRouter {
    routes: Vec<Route>,
    default: Option<Route>,
}

impl AlertRouter {
    /// A router that sends nothing anywhere (alert events are only
    /// stored).
    pub fn none() -> AlertRouter {
        AlertRouter::default()
    }

    /// A router with only a default route: every event goes to `topic` as
    /// `encoding`.
    pub fn single(topic: &str, encoding: &'static dyn Encoding) -> AlertRouter {
        AlertRouter {
            routes: Vec::new(),
            default: Some(Route::new(DEFAULT_ROUTE, topic, encoding)),
        }
    }

    /// The routes `a` goes to, in configuration order; the default route
    /// only when no other matched.
    pub fn routes_for(&self, a: &AlertEvent) -> Vec<&Route> {
        let mut out: Vec<&Route> = self.routes.iter().filter(|r| r.matches(a)).collect();
        if out.is_empty() {
            out.extend(self.default.as_ref());
        }
        out
    }

    /// Registers each route's [`ROUTE_EVENTS`] counter at 0, so it exists
    /// before the route's first event.
    pub fn register_metrics(&self) {
        for r in self.routes() {
            metrics::counter!(ROUTE_EVENTS, "route" => r.name().to_string()).increment(0);
        }
    }

    /// Every route (the default last).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().chain(self.default.as_ref())
    }

    /// True when no event goes anywhere.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.default.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, resolved};

    fn settings(toml_text: &str) -> AlertSettings {
        toml::from_str(toml_text).unwrap()
    }

    const SOC: &str = r#"
        [default]
        encoding = "json"

        [[route]]
        name = "soc-critical"
        topic = "soc.critical"
        encoding = "ocsf"
        severity = ["critical"]
        tenant = ["acme"]

        [[route]]
        name = "all-json"
        topic = "rmm.alerts.v1"

        [[route]]
        name = "maintenance"
        topic = "rmm.maintenance"
        encoding = "cef"
        suppressed = "only"
        status = ["firing"]
    "#;

    fn names(r: &AlertRouter, a: &AlertEvent) -> Vec<String> {
        r.routes_for(a)
            .iter()
            .map(|r| r.name().to_string())
            .collect()
    }

    #[test]
    fn events_go_to_every_matching_route_and_else_to_the_default() {
        let r = settings(SOC).router("alerts").unwrap();
        let mut a = firing();
        a.severity = Severity::Critical;
        assert_eq!(names(&r, &a), ["soc-critical", "all-json"]);
        a.tenant = "other".into();
        assert_eq!(names(&r, &a), ["all-json"]);
        a.suppressed = true;
        assert_eq!(names(&r, &a), ["maintenance"]);
        a.status = AlertStatus::Resolved;
        // Suppressed, resolved: no route takes it, the default does.
        assert_eq!(names(&r, &a), ["default"]);
        let d = r.routes_for(&a)[0];
        assert_eq!((d.topic(), d.encoding().name()), ("alerts", "json"));
        let soc = r.routes().next().unwrap();
        assert_eq!(
            (soc.topic(), soc.encoding().name()),
            ("soc.critical", "ocsf")
        );
    }

    #[test]
    fn every_filter_field_restricts() {
        let base = r#"
            [default]
            encoding = "json"
            [[route]]
            name = "r"
            topic = "t"
        "#;
        let cases = [
            ("severity = [\"warning\"]", "severity = [\"info\"]"),
            ("tenant = [\"acme\", \"x\"]", "tenant = [\"x\"]"),
            ("rule = [\"disk_high\"]", "rule = [\"cpu_high\"]"),
            ("status = [\"firing\"]", "status = [\"resolved\"]"),
            ("suppressed = \"include\"", "suppressed = \"only\""),
        ];
        let a = firing();
        for (takes, refuses) in cases {
            let r = settings(&format!("{base}{takes}")).router("d").unwrap();
            assert_eq!(names(&r, &a), ["r"], "{takes}");
            let r = settings(&format!("{base}{refuses}")).router("d").unwrap();
            assert_eq!(names(&r, &a), ["default"], "{refuses}");
        }
        // Statuses: both lifecycle events of one incident when unrestricted.
        let r = settings(base).router("d").unwrap();
        assert_eq!(names(&r, &resolved()), ["r"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let s = settings(
            r#"
            [default]
            encoding = "xml"
            [[route]]
            name = "default"
            topic = ""
            severity = ["urgent"]
            status = ["open"]
            [[route]]
            name = "a b"
            topic = "t"
            encoding = "csv"
            tenant = [""]
            [[route]]
            name = "ok"
            topic = "t"
            [[route]]
            name = "ok"
            topic = "t2"
            "#,
        );
        let p = s.validate();
        let want = [
            "alerts.default.encoding: unknown encoding \"xml\"",
            "alerts.route[0].name: \"default\" is the default route's name",
            "alerts.route[0].topic: must not be empty",
            "alerts.route[0].severity: unknown severity \"urgent\"",
            "alerts.route[0].status: unknown status \"open\"",
            "alerts.route[1].name: \"a b\" must be",
            "alerts.route[1].encoding: unknown encoding \"csv\" (known: json, ocsf, cef, ecs)",
            "alerts.route[1].tenant: empty name",
            "alerts.route[3].name: \"ok\" is used by another route",
        ];
        assert_eq!(p.len(), want.len(), "{p:#?}");
        for w in want {
            assert!(p.iter().any(|x| x.starts_with(w)), "{w} not in {p:#?}");
        }
        assert!(s.router("x").is_err());
    }

    #[test]
    fn unknown_keys_and_suppressed_values_are_refused() {
        let e = toml::from_str::<AlertSettings>(
            "[default]\nencoding = \"json\"\n[[route]]\nname = \"r\"\ntopic = \"t\"\nseverities = []\n",
        );
        assert!(e.is_err());
        let e = toml::from_str::<AlertSettings>(
            "[default]\nencoding = \"json\"\n[[route]]\nname = \"r\"\ntopic = \"t\"\nsuppressed = \"yes\"\n",
        );
        assert!(e.is_err());
        assert!(
            toml::from_str::<AlertSettings>("route = []\n").is_err(),
            "the default route is required"
        );
    }

    #[test]
    fn topics_lists_each_destination_once() {
        let s = settings(SOC);
        assert_eq!(
            s.topics("rmm.alerts.v1"),
            ["soc.critical", "rmm.alerts.v1", "rmm.maintenance"]
        );
        let mut s = s;
        s.default.topic = "fallback".into();
        assert_eq!(s.topics("rmm.alerts.v1").last(), Some(&"fallback"));
    }
}
