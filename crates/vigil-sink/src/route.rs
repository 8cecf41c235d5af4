//! Alert routing: which destinations (topic and encoding) each alert event
//! goes to.
//!
//! An [`AlertRouter`] holds routes; an event goes to every route it
//! matches, and to the default route when it matches none. The record key
//! is always the alert's fingerprint (ordering per incident), whatever the
//! route. Each event sent on a route is counted in
//! [`ROUTE_EVENTS`]`{route}`.

use vigil_ops::model::AlertEvent;

use crate::encoding::Encoding;

/// Alert events sent on a route, label `route` (the route's name, from
/// the configuration: a closed set).
pub const ROUTE_EVENTS: &str = "vigil_alert_route_events_total";

/// Name of the default route.
pub const DEFAULT_ROUTE: &str = "default";

/// One route: where matching alert events go, and how they are encoded.
pub struct Route {
    name: String,
    topic: String,
    encoding: &'static dyn Encoding,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("encoding", &self.encoding.name())
            .finish()
    }
}

impl Route {
    /// A route named `name` to `topic`, encoded as `encoding`.
    pub fn new(name: &str, topic: &str, encoding: &'static dyn Encoding) -> Route {
        Route {
            name: name.to_string(),
            topic: topic.to_string(),
            encoding,
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

    /// The routes `a` goes to, in configuration order (the default route
    /// last, only when no other matched).
    pub fn routes_for<'a>(&'a self, a: &AlertEvent) -> impl Iterator<Item = &'a Route> + 'a {
        let _ = a;
        self.routes.iter().chain(self.default.as_ref())
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
