//! The `sale` scenario on goose: thousands of logged-in, verified buyers hit one
//! product in the same second. Each goose user is one buyer and runs once:
//!
//! 1. buy with its own Idempotency-Key, retrying the same key on 503, 429 and
//!    "in flight" answers (bounded), until it wins (201/202) or is told sold-out;
//! 2. replay that key once: a winner must get the same order and unit back;
//! 3. one winner in [`SECOND_KEY_EVERY`] tries again with a new key, as a buyer who
//!    lost track of their first click: one per user says 409 already-purchased.
//!
//! Expected 409s are marked as successes in goose (its own kind in our report), and
//! every answer is timed here too, per route and outcome, in µs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use goose::metrics::GooseMetrics;
use goose::prelude::*;
use uuid::Uuid;

use crate::buyers::Buyer;
use crate::record::{Outcome, Recorder};

/// Route names, as the report groups them (goose names requests the same way).
pub const ROUTE_BUY: &str = "POST /api/v1/user/buy/{id}";
pub const ROUTE_REPLAY: &str = "POST /api/v1/user/buy/{id} (replay)";
pub const ROUTE_SECOND_KEY: &str = "POST /api/v1/user/buy/{id} (new key)";
/// Attempts of one key before a buyer gives up (retries of 503/429/in-flight/errors).
pub const MAX_ATTEMPTS: u32 = 8;
/// Pause before a retry, times the attempt number, at most [`MAX_RETRY_PAUSE`].
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
pub const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// One winner in this many also tries a second key.
pub const SECOND_KEY_EVERY: usize = 10;
/// Per-request timeout of goose's client, in seconds.
pub const REQUEST_TIMEOUT_S: u32 = 10;

/// What every goose user shares.
#[derive(Debug)]
pub struct Sale {
    pub product: Uuid,
    pub buyers: Vec<Buyer>,
    /// Shared with the other scenarios of a `mixed` run.
    pub recorder: Arc<Recorder>,
}

impl Sale {
    /// The buyer goose user `index` plays.
    pub(crate) fn buyer_of(&self, index: usize) -> Option<Buyer> {
        self.buyers.get(index % self.buyers.len().max(1)).cloned()
    }
}

/// The Idempotency-Key of goose user `index`'s attempt.
pub(crate) fn key_of(index: usize) -> String {
    format!("sale-{index}")
}

/// One answer, read.
pub(crate) struct Answer {
    outcome: Outcome,
    order: Option<(Uuid, i64)>,
}

/// Runs the scenario: one goose user per buyer, all started within one second, each
/// running once. `reports` are goose's own report files (`.json`, `.md`, `.html`);
/// `baseline` a previous goose JSON to compare with.
pub async fn run(
    sale: Arc<Sale>,
    base_url: &str,
    reports: Vec<String>,
    baseline: Option<String>,
) -> anyhow::Result<GooseMetrics> {
    let users = sale.buyers.len();
    let mut config = crate::crowd::configuration(base_url, users, REQUEST_TIMEOUT_S, reports, baseline);
    config.iterations = Some(1);
    let shared = Arc::clone(&sale);
    let buy = Transaction::new(Arc::new(move |user| Box::pin(buyer(user, Arc::clone(&shared))))).set_name("buyer");
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario!("sale").register_transaction(buy))
        .execute()
        .await?;
    Ok(metrics)
}

/// One buyer's whole attempt (the goose transaction of `sale`).
pub(crate) async fn buyer(user: &mut GooseUser, sale: Arc<Sale>) -> TransactionResult {
    let index = user.weighted_users_index;
    let Some(buyer) = sale.buyer_of(index) else { return Ok(()) };
    let key = key_of(index);
    let mut won = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let answer = buy(user, &sale, &buyer, &key, ROUTE_BUY).await?;
        match answer.outcome {
            Outcome::Won | Outcome::Pending => {
                won = answer.order;
                break;
            }
            Outcome::SoldOut | Outcome::AlreadyPurchased | Outcome::Replay => break,
            Outcome::Unavailable | Outcome::RateLimited | Outcome::InFlight | Outcome::Ok | Outcome::Error => {
                tokio::time::sleep((RETRY_PAUSE * attempt).min(MAX_RETRY_PAUSE)).await;
            }
        }
    }
    if won.is_some() {
        buy(user, &sale, &buyer, &key, ROUTE_REPLAY).await?;
        if index % SECOND_KEY_EVERY == 0 {
            buy(user, &sale, &buyer, &format!("{key}-again"), ROUTE_SECOND_KEY).await?;
        }
    }
    Ok(())
}

/// One purchase request, timed, recorded and marked for goose.
pub(crate) async fn buy(
    user: &mut GooseUser,
    sale: &Sale,
    buyer: &Buyer,
    key: &str,
    route: &str,
) -> Result<Answer, Box<TransactionError>> {
    let path = format!("/api/v1/user/buy/{}", sale.product);
    let builder = user
        .get_request_builder(&GooseMethod::Post, &path)?
        .header("cookie", &buyer.cookie)
        .header("idempotency-key", key)
        .header("x-forwarded-for", buyer.ip.to_string());
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path(path.as_str())
        .name(route)
        .set_request_builder(builder)
        .build();
    let started = Instant::now();
    let mut goose = user.request(request).await?;
    let (status, problem, replayed, body) = match goose.response {
        Ok(response) => {
            let status = response.status().as_u16();
            let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
            let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            (status, None::<String>, replayed, body)
        }
        Err(err) => {
            let cause = if err.is_timeout() { "timeout".to_owned() } else { format!("no answer: {err}") };
            sale.recorder.record(route, Outcome::Error, started.elapsed(), Some(&cause));
            user.set_failure(&cause, &mut goose.request, None, None)?;
            return Ok(Answer { outcome: Outcome::Error, order: None });
        }
    };
    let latency = started.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let problem = problem.or_else(|| json["type"].as_str().map(str::to_owned));
    let outcome = match Outcome::classify(status, problem.as_deref(), replayed) {
        // A purchase never answers 200: that is an error of the purchase route.
        Outcome::Ok => Outcome::Error,
        outcome => outcome,
    };
    let order = match (json["order_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()), json["unit"].as_i64()) {
        (Some(order), Some(unit)) if matches!(outcome, Outcome::Won | Outcome::Pending | Outcome::Replay) => {
            Some((order, unit))
        }
        _ => None,
    };
    if let Some((order_id, unit)) = order {
        sale.recorder.acknowledge(buyer.user_id, key, order_id, unit, route == ROUTE_REPLAY);
    }
    let cause =
        (!outcome.expected()).then(|| format!("{status} {}", problem.as_deref().unwrap_or("")).trim().to_owned());
    sale.recorder.record(route, outcome, latency, cause.as_deref());
    if outcome.expected() {
        user.set_success(&mut goose.request)?;
    } else {
        user.set_failure(outcome.name(), &mut goose.request, None, None)?;
    }
    Ok(Answer { outcome, order })
}
