//! Prometheus metrics of one server instance, rendered at `/metrics`.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::extract::MatchedPath;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One series of the HTTP metrics. Built per request without allocating: the method is a
/// static name and the route the router's own template, shared.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: RouteLabel,
    pub status: u16,
}

/// The route template a request matched (`/api/v1/user/buy/{product_id}`), or `unmatched`.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Option<MatchedPath>);

impl RouteLabel {
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl Hash for RouteLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Purchase outcomes whose counters exist from the start (at zero), so that the hot path
/// increments one without building a label set, and a dashboard sees every series.
pub const PURCHASE_OUTCOMES: [&str; 13] = [
    "sold_out",
    "replay",
    "confirmed",
    "pending",
    "already_purchased",
    "key_reused",
    "in_flight",
    "not_started",
    "ended",
    "paused",
    "unavailable",
    "not_found",
    "error",
];

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency_seconds: Family<HttpLabels, Histogram>,
    pub product_cache_hits: Counter,
    pub product_cache_misses: Counter,
    pub purchase_outcomes: Family<OutcomeLabels, Counter>,
    /// The counters of [`PURCHASE_OUTCOMES`] in `purchase_outcomes`, looked up once.
    outcome_counters: Vec<(&'static str, Counter)>,
    pub sold_out_shortcuts: Counter,
    pub replays_from_memory: Counter,
    pub reconciled_orders: Counter,
    pub sale_rebuilds: Counter,
    /// Tries of a rebuild's MongoDB read that failed because MongoDB did not answer, and
    /// were made again.
    pub rebuild_read_retries: Counter,
    /// Reservations that waited for a fresh unit (their unit was MongoDB's for another
    /// order) and were given an answer by the purchase script.
    pub reissued_reservations: Counter,
    /// Logins and registrations refused at once because the password-check queue was full.
    pub password_checks_shed: Counter,
    /// Group commits of order writes, and the orders they carried (their ratio is the
    /// mean batch size).
    pub order_group_commits: Counter,
    pub orders_group_committed: Counter,
    /// Purchases that hold a reservation and whose order write has not ended yet.
    pub orders_awaiting_write: Gauge,
}

/// A purchase counted in `orders_awaiting_write`; uncounted when dropped (its write
/// ended, or its request stopped).
#[derive(Debug)]
pub struct AwaitingWrite<'a>(&'a Gauge);

impl Drop for AwaitingWrite<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
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
        let replays_from_memory = Counter::default();
        let reconciled_orders = Counter::default();
        let sale_rebuilds = Counter::default();
        let rebuild_read_retries = Counter::default();
        let reissued_reservations = Counter::default();
        let password_checks_shed = Counter::default();
        let order_group_commits = Counter::default();
        let orders_group_committed = Counter::default();
        let orders_awaiting_write = Gauge::default();
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
        registry.register(
            "replays_from_memory",
            "Purchase replays answered from this instance's stored answers",
            replays_from_memory.clone(),
        );
        registry.register("reconciled_orders", "Reservations persisted by the reconciler", reconciled_orders.clone());
        registry.register("sale_rebuilds", "Sale states rebuilt from MongoDB", sale_rebuilds.clone());
        registry.register(
            "rebuild_read_retries",
            "Rebuild reads of MongoDB made again after MongoDB did not answer",
            rebuild_read_retries.clone(),
        );
        registry.register(
            "reissued_reservations",
            "Reservations whose unit MongoDB held for another order, given a fresh unit or an answer",
            reissued_reservations.clone(),
        );
        registry.register(
            "password_checks_shed",
            "Logins and registrations refused because the password-check queue was full",
            password_checks_shed.clone(),
        );
        registry.register(
            "order_group_commits",
            "Group commits of order writes (one insert_many each)",
            order_group_commits.clone(),
        );
        registry.register("orders_group_committed", "Orders written by group commits", orders_group_committed.clone());
        registry.register(
            "orders_awaiting_write",
            "Purchases holding a reservation whose order write has not ended",
            orders_awaiting_write.clone(),
        );
        let outcome_counters = PURCHASE_OUTCOMES
            .iter()
            .map(|&outcome| {
                (outcome, purchase_outcomes.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).clone())
            })
            .collect();
        Self {
            registry,
            http_requests,
            http_latency_seconds,
            product_cache_hits,
            product_cache_misses,
            purchase_outcomes,
            outcome_counters,
            sold_out_shortcuts,
            replays_from_memory,
            reconciled_orders,
            sale_rebuilds,
            rebuild_read_retries,
            reissued_reservations,
            password_checks_shed,
            order_group_commits,
            orders_group_committed,
            orders_awaiting_write,
        }
    }

    /// Counts and times one HTTP answer.
    /// Counts one purchase in `orders_awaiting_write` for as long as the guard lives.
    pub fn awaiting_write(&self) -> AwaitingWrite<'_> {
        self.orders_awaiting_write.inc();
        AwaitingWrite(&self.orders_awaiting_write)
    }

    pub fn record_http(&self, method: &'static str, route: RouteLabel, status: u16, elapsed: Duration) {
        let labels = HttpLabels { method, route, status };
        self.http_requests.get_or_create(&labels).inc();
        self.http_latency_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    pub fn purchase_outcome(&self, outcome: &str) {
        match self.outcome_counters.iter().find(|(known, _)| *known == outcome) {
            Some((_, counter)) => counter.inc(),
            None => self.purchase_outcomes.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc(),
        };
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
