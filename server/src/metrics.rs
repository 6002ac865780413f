//! Prometheus metrics of one server instance, rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency_seconds: Family<HttpLabels, Histogram>,
    pub product_cache_hits: Counter,
    pub product_cache_misses: Counter,
    pub purchase_outcomes: Family<OutcomeLabels, Counter>,
    pub sold_out_shortcuts: Counter,
    pub reconciled_orders: Counter,
    pub sale_rebuilds: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flashsale");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency_seconds = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let product_cache_hits = Counter::default();
        let product_cache_misses = Counter::default();
        let purchase_outcomes = Family::<OutcomeLabels, Counter>::default();
        let sold_out_shortcuts = Counter::default();
        let reconciled_orders = Counter::default();
        let sale_rebuilds = Counter::default();
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", http_latency_seconds.clone());
        registry.register("product_cache_hits", "Product cache hits", product_cache_hits.clone());
        registry.register("product_cache_misses", "Product cache misses", product_cache_misses.clone());
        registry.register("purchase_outcomes", "Purchase attempts by outcome", purchase_outcomes.clone());
        registry.register(
            "sold_out_shortcuts",
            "Purchases refused in process after sell-out",
            sold_out_shortcuts.clone(),
        );
        registry.register("reconciled_orders", "Reservations persisted by the reconciler", reconciled_orders.clone());
        registry.register("sale_rebuilds", "Sale states rebuilt from MongoDB", sale_rebuilds.clone());
        Self {
            registry,
            http_requests,
            http_latency_seconds,
            product_cache_hits,
            product_cache_misses,
            purchase_outcomes,
            sold_out_shortcuts,
            reconciled_orders,
            sale_rebuilds,
        }
    }

    pub fn purchase_outcome(&self, outcome: &str) {
        self.purchase_outcomes.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
