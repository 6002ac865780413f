//! The `browse` scenario on goose: shoppers read the catalogue before a sale. For the
//! run's duration each goose user, with its own client address (`X-Forwarded-For`, as
//! shoppers behind one proxy), lists the products and opens [`DETAILS_PER_LIST`] product
//! pages, dealt round-robin over the catalogue so every product is read alike.
//!
//! Every answer is timed per route and outcome. The product cache's hit ratio over the
//! run comes from the server's own counters (`/metrics`, read before and after). The
//! check after the load: every read answered 200, every product page named the product
//! asked for, every list page listed products.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use uuid::Uuid;

use crate::buyers::buyer_ip;
use crate::check::{Check, CheckReport};
use crate::record::{Outcome, Recorder};
use crate::report::CacheFigures;

/// Route names, as the report groups them (goose names requests the same way).
pub const ROUTE_LIST: &str = "GET /api/v1/products";
pub const ROUTE_DETAIL: &str = "GET /api/v1/products/{id}";
/// Product pages a shopper opens after each list.
pub const DETAILS_PER_LIST: usize = 4;
/// Per-request timeout of goose's client, in seconds.
pub const REQUEST_TIMEOUT_S: u32 = 10;
/// The server's counters of the product cache, as `/metrics` names them.
const CACHE_HITS: &str = "flashsale_product_cache_hits_total";
const CACHE_MISSES: &str = "flashsale_product_cache_misses_total";

/// What every goose user shares.
#[derive(Debug)]
pub struct Browse {
    pub products: Vec<Uuid>,
    /// Shared with the other scenarios of a `mixed` run.
    pub recorder: Arc<Recorder>,
    /// Next product page to open, over all shoppers.
    next_detail: AtomicU64,
    /// 200 answers whose body was not what the route promises.
    wrong_details: AtomicU64,
    wrong_lists: AtomicU64,
    /// Answers other than 200.
    not_ok: AtomicU64,
}

impl Browse {
    pub fn new(products: Vec<Uuid>, recorder: Arc<Recorder>) -> Self {
        Self {
            products,
            recorder,
            next_detail: AtomicU64::new(0),
            wrong_details: AtomicU64::new(0),
            wrong_lists: AtomicU64::new(0),
            not_ok: AtomicU64::new(0),
        }
    }

    /// The check after the load.
    pub fn check(&self) -> CheckReport {
        let series = self.recorder.series();
        let count =
            |route: &str| -> u64 { series.iter().filter(|((r, _), _)| r == route).map(|(_, s)| s.latency.len()).sum() };
        let (lists, details) = (count(ROUTE_LIST), count(ROUTE_DETAIL));
        let not_ok = self.not_ok.load(Ordering::Relaxed);
        let wrong_details = self.wrong_details.load(Ordering::Relaxed);
        let wrong_lists = self.wrong_lists.load(Ordering::Relaxed);
        let checks = vec![
            Check {
                name: "every read answered 200",
                passed: not_ok == 0 && lists + details > 0,
                detail: format!("{not_ok} of {} reads answered otherwise", lists + details),
            },
            Check {
                name: "product pages named their product",
                passed: wrong_details == 0 && details > 0,
                detail: format!("{wrong_details} of {details} product pages named another product or none"),
            },
            Check {
                name: "list pages listed products",
                passed: wrong_lists == 0 && lists > 0,
                detail: format!("{wrong_lists} of {lists} list pages held no product list"),
            },
        ];
        CheckReport { checks, sale: None }
    }
}

/// Runs the scenario: `users` goose users, all started within one second, browsing for
/// `duration`. `reports` are goose's own report files; `baseline` a previous goose JSON.
pub async fn run(
    browse: Arc<Browse>,
    base_url: &str,
    users: usize,
    duration: Duration,
    reports: Vec<String>,
    baseline: Option<String>,
) -> anyhow::Result<GooseMetrics> {
    let mut config = crate::crowd::configuration(base_url, users, REQUEST_TIMEOUT_S, reports, baseline);
    config.run_time = Some(duration.as_secs().max(1).to_string());
    let shared = Arc::clone(&browse);
    let shop = Transaction::new(Arc::new(move |user| Box::pin(shopper(user, Arc::clone(&shared))))).set_name("shopper");
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario!("browse").register_transaction(shop))
        .execute()
        .await?;
    Ok(metrics)
}

/// One round of a shopper: the list, then product pages (the goose transaction of `browse`).
pub(crate) async fn shopper(user: &mut GooseUser, browse: Arc<Browse>) -> TransactionResult {
    let ip = buyer_ip(user.weighted_users_index).to_string();
    read(user, &browse, &ip, ROUTE_LIST, "/api/v1/products", None).await?;
    for _ in 0..DETAILS_PER_LIST {
        let next = browse.next_detail.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(next).unwrap_or(0) % browse.products.len().max(1);
        let Some(&product) = browse.products.get(index) else { return Ok(()) };
        read(user, &browse, &ip, ROUTE_DETAIL, &format!("/api/v1/products/{product}"), Some(product)).await?;
    }
    Ok(())
}

/// One read, timed, recorded, checked and marked for goose. `product` is the product a
/// detail page must name.
async fn read(
    user: &mut GooseUser,
    browse: &Browse,
    ip: &str,
    route: &str,
    path: &str,
    product: Option<Uuid>,
) -> Result<(), Box<TransactionError>> {
    let builder = user.get_request_builder(&GooseMethod::Get, path)?.header("x-forwarded-for", ip);
    let request =
        GooseRequest::builder().method(GooseMethod::Get).path(path).name(route).set_request_builder(builder).build();
    let started = Instant::now();
    let mut goose = user.request(request).await?;
    let (status, body) = match goose.response {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
        }
        Err(err) => {
            let cause = if err.is_timeout() { "timeout".to_owned() } else { format!("no answer: {err}") };
            browse.not_ok.fetch_add(1, Ordering::Relaxed);
            browse.recorder.record(route, Outcome::Error, started.elapsed(), Some(&cause));
            user.set_failure(&cause, &mut goose.request, None, None)?;
            return Ok(());
        }
    };
    let latency = started.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let outcome = Outcome::classify(status, json["type"].as_str(), false);
    if outcome != Outcome::Ok {
        browse.not_ok.fetch_add(1, Ordering::Relaxed);
    } else if let Some(product) = product {
        if json["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()) != Some(product) {
            browse.wrong_details.fetch_add(1, Ordering::Relaxed);
        }
    } else if !json["items"].as_array().is_some_and(|items| items.iter().all(|item| item["id"].is_string())) {
        browse.wrong_lists.fetch_add(1, Ordering::Relaxed);
    }
    let cause = (outcome != Outcome::Ok)
        .then(|| format!("{status} {}", json["type"].as_str().unwrap_or_default()).trim().to_owned());
    browse.recorder.record(route, outcome, latency, cause.as_deref());
    if outcome == Outcome::Ok {
        user.set_success(&mut goose.request)?;
    } else {
        user.set_failure(outcome.name(), &mut goose.request, None, None)?;
    }
    Ok(())
}

/// The server's product cache counters now, from its `/metrics`.
pub async fn cache_counters(base_url: &str) -> anyhow::Result<CacheFigures> {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .context("reading /metrics")?
        .error_for_status()
        .context("reading /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    parse_cache_counters(&text).context("the product cache counters in /metrics")
}

/// The two counters of an OpenMetrics text.
fn parse_cache_counters(text: &str) -> Option<CacheFigures> {
    let counter = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            // Counters are whole numbers, far below 2^53.
            .map(|value| value as u64)
    };
    Some(CacheFigures { hits: counter(CACHE_HITS)?, misses: counter(CACHE_MISSES)? })
}

/// What the cache did between two readings of its counters.
pub fn cache_delta(before: CacheFigures, after: CacheFigures) -> CacheFigures {
    CacheFigures { hits: after.hits.saturating_sub(before.hits), misses: after.misses.saturating_sub(before.misses) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_counters_are_read_from_openmetrics_text() {
        let text = "# HELP flashsale_product_cache_hits Product cache hits.\n\
                    # TYPE flashsale_product_cache_hits counter\n\
                    flashsale_product_cache_hits_total 1200\n\
                    flashsale_product_cache_misses_total 34\n\
                    flashsale_product_cache_hits_created 1.7e9\n# EOF\n";
        assert_eq!(parse_cache_counters(text), Some(CacheFigures { hits: 1200, misses: 34 }));
        assert_eq!(parse_cache_counters("flashsale_product_cache_hits_total 3\n"), None, "misses missing");
        let delta = cache_delta(CacheFigures { hits: 10, misses: 4 }, CacheFigures { hits: 110, misses: 4 });
        assert_eq!(delta, CacheFigures { hits: 100, misses: 0 });
        assert_eq!(delta.hit_ratio(), Some(1.0));
        assert_eq!(CacheFigures { hits: 0, misses: 0 }.hit_ratio(), None);
    }
}
