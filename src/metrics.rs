//! Prometheus metrics (`GET /metrics`, text format), with the
//! `prometheus-client` crate: sessions by kind and profile, how long entering
//! a container takes, CRI call latency and errors, authentication failures
//! and authorization decisions. One process-wide registry: the agent is one
//! process, and every part records without threading a handle through.
//! Labels never carry user names or pod names (cardinality, and privacy).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

struct Metrics {
    registry: Registry,
    sessions_active: Family<Labels, Gauge>,
    sessions: Family<Labels, Counter>,
    enter_seconds: Histogram,
    cri_seconds: Family<Labels, Histogram>,
    cri_errors: Family<Labels, Counter>,
    auth_failures: Counter,
    decisions: Family<Labels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms to about 16 s.
    exponential_buckets(0.0005, 2.0, 16)
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("nsdebug");
    let sessions_active = Family::<Labels, Gauge>::default();
    registry.register(
        "sessions_active",
        "Sessions running now, by kind (exec, run, capture, files, probe) and profile",
        sessions_active.clone(),
    );
    let sessions = Family::<Labels, Counter>::default();
    registry.register(
        "sessions",
        "Sessions started, by kind and profile",
        sessions.clone(),
    );
    let enter_seconds = Histogram::new(latency_buckets());
    registry.register(
        "enter_seconds",
        "Time from handing a request to the enter helper until the command runs in the container",
        enter_seconds.clone(),
    );
    let cri_seconds =
        Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
    registry.register(
        "cri_call_seconds",
        "Latency of calls to the container runtime, by CRI method",
        cri_seconds.clone(),
    );
    let cri_errors = Family::<Labels, Counter>::default();
    registry.register(
        "cri_call_errors",
        "Failed calls to the container runtime, by CRI method",
        cri_errors.clone(),
    );
    let auth_failures = Counter::default();
    registry.register(
        "authentication_failures",
        "Requests whose bearer token was missing or not valid",
        auth_failures.clone(),
    );
    let decisions = Family::<Labels, Counter>::default();
    registry.register(
        "authorization_decisions",
        "SubjectAccessReview decisions (cached ones included), by decision and resource",
        decisions.clone(),
    );
    Metrics {
        registry,
        sessions_active,
        sessions,
        enter_seconds,
        cri_seconds,
        cri_errors,
        auth_failures,
        decisions,
    }
});

/// A session in the metrics while it lives.
pub struct SessionMetric {
    labels: Labels,
}

impl SessionMetric {
    pub fn start(kind: &'static str, profile: &str) -> Self {
        let labels = vec![("kind", kind.to_string()), ("profile", profile.to_string())];
        METRICS.sessions.get_or_create(&labels).inc();
        METRICS.sessions_active.get_or_create(&labels).inc();
        Self { labels }
    }
}

impl Drop for SessionMetric {
    fn drop(&mut self) {
        METRICS.sessions_active.get_or_create(&self.labels).dec();
    }
}

pub fn entered(took: Duration) {
    METRICS.enter_seconds.observe(took.as_secs_f64());
}

pub fn cri_call(method: &'static str, took: Duration, ok: bool) {
    let labels = vec![("method", method.to_string())];
    METRICS
        .cri_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if !ok {
        METRICS.cri_errors.get_or_create(&labels).inc();
    }
}

pub fn authentication_failed() {
    METRICS.auth_failures.inc();
}

pub fn decision(allowed: bool, resource: &str) {
    let labels = vec![
        (
            "decision",
            if allowed { "allow" } else { "forbid" }.to_string(),
        ),
        ("resource", resource.to_string()),
    ];
    METRICS.decisions.get_or_create(&labels).inc();
}

/// Everything, in the Prometheus text format.
pub fn render() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &METRICS.registry);
    text
}
