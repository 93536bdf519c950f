//! The host's Prometheus metrics, one registry per process.
//!
//! Triggers and capabilities record into [`metrics()`] where things happen;
//! the ops listener encodes the registry for `GET /metrics`. Gauges that are
//! a count of something another module already tracks (calls running and
//! waiting per component) are filled in at scrape time instead.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The component that served it (empty when no route matched).
    pub component: String,
    /// The route as written in the manifest.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Labels naming a component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// The component's id.
    pub component: String,
}

/// Labels of messages handled by one NATS trigger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The component the trigger calls.
    pub component: String,
    /// The trigger's subject (with its wildcards).
    pub subject: String,
}

/// Labels of one component's outbound calls to one destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// The calling component.
    pub component: String,
    /// `scheme://host[:port]`.
    pub destination: String,
}

/// Labels of outbound call outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    /// The calling component.
    pub component: String,
    /// `scheme://host[:port]`.
    pub destination: String,
    /// `ok`, `failed`, `retried`, `timed_out` or `refused_open` (breaker).
    pub outcome: &'static str,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by component, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// HTTP request latency by component.
    pub request_seconds: Family<ComponentLabels, Histogram>,
    /// Calls running now, per component (set at scrape time).
    pub in_flight: Family<ComponentLabels, Gauge>,
    /// Calls waiting for admission, per component (set at scrape time).
    pub queued: Family<ComponentLabels, Gauge>,
    /// Live instances per component.
    pub instances: Family<ComponentLabels, Gauge>,
    /// Time to make a fresh instance from its `InstancePre`.
    pub instantiation_seconds: Family<ComponentLabels, Histogram>,
    /// Messages delivered to a trigger (redeliveries included).
    pub messages_received: Family<MessageLabels, Counter>,
    /// Messages a handler took (acknowledged).
    pub messages_acked: Family<MessageLabels, Counter>,
    /// Messages sent back for another delivery.
    pub messages_redelivered: Family<MessageLabels, Counter>,
    /// Messages moved to the dead-letter subject.
    pub messages_dead_lettered: Family<MessageLabels, Counter>,
    /// Outbox rows not yet relayed, per component, at the relay's last look.
    pub outbox_backlog: Family<ComponentLabels, Gauge>,
    /// Outbox rows that could never be sent, moved to the dead-letter table.
    pub outbox_dead_letters: Family<ComponentLabels, Counter>,
    /// Circuit breaker state per destination: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<DestinationLabels, Gauge>,
    /// Outbound HTTP attempts by outcome.
    pub outbound_requests: Family<OutboundLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3 min.
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("spindle");
        let metrics = Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            queued: Family::default(),
            instances: Family::default(),
            instantiation_seconds: Family::new_with_constructor(latency_histogram),
            messages_received: Family::default(),
            messages_acked: Family::default(),
            messages_redelivered: Family::default(),
            messages_dead_lettered: Family::default(),
            outbox_backlog: Family::default(),
            outbox_dead_letters: Family::default(),
            breaker_state: Family::default(),
            outbound_requests: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by component, route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "calls_in_flight",
            "Calls running now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "calls_queued",
            "Calls waiting for admission",
            metrics.queued.clone(),
        );
        registry.register(
            "instances",
            "Live component instances",
            metrics.instances.clone(),
        );
        registry.register(
            "instantiation_duration_seconds",
            "Time to instantiate a component",
            metrics.instantiation_seconds.clone(),
        );
        registry.register(
            "messages_received",
            "Messages delivered to a trigger",
            metrics.messages_received.clone(),
        );
        registry.register(
            "messages_acked",
            "Messages handled and acknowledged",
            metrics.messages_acked.clone(),
        );
        registry.register(
            "messages_redelivered",
            "Messages sent back for redelivery",
            metrics.messages_redelivered.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "Messages moved to the dead-letter subject",
            metrics.messages_dead_lettered.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox messages not yet relayed",
            metrics.outbox_backlog.clone(),
        );
        registry.register(
            "outbox_dead_letters",
            "Outbox rows that could never be sent, set aside in spindle_outbox_dead_letters",
            metrics.outbox_dead_letters.clone(),
        );
        registry.register(
            "outbound_breaker_state",
            "Circuit breaker state (0 closed, 1 open, 2 half-open)",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "outbound_requests",
            "Outbound HTTP attempts by outcome",
            metrics.outbound_requests.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The registry in Prometheus's text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// `component` as a label set.
pub fn component(component: &str) -> ComponentLabels {
    ComponentLabels {
        component: component.to_string(),
    }
}

/// One HTTP route's request metrics, resolved when the route is made: a
/// request then costs no label strings and no lookup in the families.
#[derive(Debug)]
pub struct RouteMetrics {
    component: String,
    route: String,
    /// The request counter per status; a status gets its own on first use.
    by_status: RwLock<HashMap<u16, Counter>>,
    /// The component's latency histogram; `None` for unrouted requests.
    latency: Option<Histogram>,
}

impl RouteMetrics {
    /// The metrics of `route` of `component`; empty strings for requests
    /// that matched no route (counted, without latency).
    pub fn new(component: &str, route: &str) -> Self {
        let latency = (!component.is_empty()).then(|| {
            metrics()
                .request_seconds
                .get_or_create(&self::component(component))
                .clone()
        });
        Self {
            component: component.to_string(),
            route: route.to_string(),
            by_status: RwLock::default(),
            latency,
        }
    }

    /// Counts one request answered with `status` after `elapsed`.
    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(latency) = &self.latency {
            latency.observe(elapsed.as_secs_f64());
        }
        // A poisoned lock only means a panic elsewhere; the map is intact.
        let known = self
            .by_status
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&status)
            .map(|counter| counter.inc());
        if known.is_none() {
            let counter = metrics()
                .requests
                .get_or_create(&RequestLabels {
                    component: self.component.clone(),
                    route: self.route.clone(),
                    status,
                })
                .clone();
            counter.inc();
            self.by_status
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(status, counter);
        }
    }
}

/// One NATS trigger's message counters, resolved when it subscribes: a
/// message then costs no label strings and no lookup in the families.
#[derive(Clone, Debug)]
pub struct SubscriptionMetrics {
    /// Messages delivered to the component.
    pub received: Counter,
    /// Messages the component handled and that were acknowledged.
    pub acked: Counter,
    /// Messages sent back for another delivery.
    pub redelivered: Counter,
    /// Messages moved to the dead-letter subject.
    pub dead_lettered: Counter,
}

impl SubscriptionMetrics {
    /// The counters of `component`'s trigger on `subject`.
    pub fn new(component: &str, subject: &str) -> Self {
        let labels = MessageLabels {
            component: component.to_string(),
            subject: subject.to_string(),
        };
        let metrics = metrics();
        Self {
            received: metrics.messages_received.get_or_create(&labels).clone(),
            acked: metrics.messages_acked.get_or_create(&labels).clone(),
            redelivered: metrics.messages_redelivered.get_or_create(&labels).clone(),
            dead_lettered: metrics
                .messages_dead_lettered
                .get_or_create(&labels)
                .clone(),
        }
    }
}

/// Records one instantiation of `component` that took `elapsed`.
pub fn instance_started(component: &str, elapsed: Duration) {
    let labels = self::component(component);
    metrics().instances.get_or_create(&labels).inc();
    metrics()
        .instantiation_seconds
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// Records that an instance of `component` was released.
pub fn instance_released(component: &str) {
    metrics()
        .instances
        .get_or_create(&self::component(component))
        .dec();
}

/// Counts an instance as released however its call ends, even when the
/// call is cancelled by its timeout.
pub struct ReleaseOnDrop<'a>(pub &'a str);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        instance_released(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_metrics_count_into_the_shared_families() {
        let route = RouteMetrics::new("route-metrics-test", "/r/...");
        route.record(200, Duration::from_millis(3));
        route.record(200, Duration::from_millis(5));
        route.record(503, Duration::from_millis(1));
        let text = metrics().encode();
        for line in [
            r#"spindle_http_requests_total{component="route-metrics-test",route="/r/...",status="200"} 2"#,
            r#"spindle_http_requests_total{component="route-metrics-test",route="/r/...",status="503"} 1"#,
            r#"spindle_http_request_duration_seconds_count{component="route-metrics-test"} 3"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn counters_appear_in_the_text_format() {
        metrics()
            .requests
            .get_or_create(&RequestLabels {
                component: "hello".into(),
                route: "/hello/...".into(),
                status: 200,
            })
            .inc();
        let text = metrics().encode();
        assert!(
            text.contains(r#"spindle_http_requests_total{component="hello",route="/hello/...",status="200"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
