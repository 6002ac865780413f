//! The `sale` scenario on goose: thousands of logged-in, verified buyers hit one
//! product in the same second. Each goose user is one buyer and runs once:
//!
//! 1. buy with its own Idempotency-Key, retrying the same key on 503, 429 and
//!    "in flight" answers and on no answer (bounded: [`MAX_ATTEMPTS`], pauses from
//!    [`retry_pause`]), until it wins (201/202) or is told sold-out;
//! 2. replay that key once (retried the same way): a winner must get the same order and
//!    unit back;
//! 3. one winner in [`SECOND_KEY_EVERY`] tries again with a new key, as a buyer who
//!    lost track of their first click: one per user says 409 already-purchased.
//!
//! Expected 409s are marked as successes in goose (its own kind in our report), and
//! every answer is timed here too, per route and outcome, in µs; every retry is counted
//! by its cause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use goose::metrics::{GooseMetrics, GooseRequestMetric};
use goose::prelude::*;
use uuid::Uuid;

use crate::buyers::Buyer;
use crate::record::{Outcome, Recorder, RetryCause};

/// Route names, as the report groups them (goose names requests the same way).
pub const ROUTE_BUY: &str = "POST /api/v1/user/buy/{id}";
pub const ROUTE_REPLAY: &str = "POST /api/v1/user/buy/{id} (replay)";
pub const ROUTE_SECOND_KEY: &str = "POST /api/v1/user/buy/{id} (new key)";
/// Attempts of one key before a buyer gives up: the first and at most seven retries, each
/// after an answer of a [`RetryCause`] (503, 429, 409 in-flight, or no answer).
pub const MAX_ATTEMPTS: u32 = 8;
/// Pause before a retry, times the attempt number, at most [`MAX_RETRY_PAUSE`], when the
/// answer says nothing of when to come back.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
pub const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause a `Retry-After` gets: a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
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

/// The pause before retry number `attempt` (1 after the first attempt): the answer's
/// `Retry-After` if it gave one, never less than the backoff (`RETRY_PAUSE` × attempt,
/// at most `MAX_RETRY_PAUSE`), never more than [`MAX_RETRY_AFTER`].
pub fn retry_pause(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = (RETRY_PAUSE * attempt).min(MAX_RETRY_PAUSE);
    retry_after.map_or(backoff, |after| after.max(backoff).min(MAX_RETRY_AFTER))
}

/// One answer, read.
pub(crate) struct Answer {
    outcome: Outcome,
    order: Option<(Uuid, i64)>,
    /// Why the key is worth another attempt, if it is.
    retry: Option<RetryCause>,
    /// The answer's `Retry-After`, in seconds.
    retry_after: Option<Duration>,
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
    let answer = attempts(user, &sale, &buyer, &key, ROUTE_BUY).await?;
    // A replayed 201 is a win too: an earlier attempt's answer was lost on the way.
    let won = matches!(answer.outcome, Outcome::Won | Outcome::Pending | Outcome::Replay) && answer.order.is_some();
    if won {
        attempts(user, &sale, &buyer, &key, ROUTE_REPLAY).await?;
        if index % SECOND_KEY_EVERY == 0 {
            attempts(user, &sale, &buyer, &format!("{key}-again"), ROUTE_SECOND_KEY).await?;
        }
    }
    Ok(())
}

/// Requests of one key on `route` until an answer not worth a retry, or [`MAX_ATTEMPTS`]
/// of them; each retry counted by its cause, after [`retry_pause`]. The last answer.
async fn attempts(
    user: &mut GooseUser,
    sale: &Sale,
    buyer: &Buyer,
    key: &str,
    route: &str,
) -> Result<Answer, Box<TransactionError>> {
    let mut attempt = 1;
    loop {
        let answer = buy(user, sale, buyer, key, route).await?;
        let Some(cause) = answer.retry else { return Ok(answer) };
        if attempt >= MAX_ATTEMPTS {
            sale.recorder.gave_up();
            return Ok(answer);
        }
        sale.recorder.retried(cause);
        tokio::time::sleep(retry_pause(attempt, answer.retry_after)).await;
        attempt += 1;
    }
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
    let (status, replayed, retry_after, body) = match goose.response {
        Ok(response) => {
            let status = response.status().as_u16();
            let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            (status, replayed, retry_after, body)
        }
        Err(err) => {
            let cause = if err.is_timeout() { "timeout".to_owned() } else { format!("no answer: {err}") };
            sale.recorder.record(route, Outcome::Error, started.elapsed(), Some(&cause));
            mark_failed(user, &cause, &mut goose.request)?;
            return Ok(Answer {
                outcome: Outcome::Error,
                order: None,
                retry: Some(RetryCause::NoAnswer),
                retry_after: None,
            });
        }
    };
    let latency = started.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let problem = json["type"].as_str();
    let outcome = match Outcome::classify(status, problem, replayed) {
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
    let said = format!("{status} {}", problem.unwrap_or("")).trim().to_owned();
    let retry = RetryCause::of(outcome);
    // An answer worth a retry says nothing about the key's order yet.
    if retry.is_none() {
        if route == ROUTE_REPLAY {
            sale.recorder.replayed(buyer.user_id, key, order, &said);
        } else if let Some((order_id, unit)) = order {
            sale.recorder.acknowledge(buyer.user_id, key, order_id, unit);
        }
    }
    sale.recorder.record(route, outcome, latency, (!outcome.expected()).then_some(said.as_str()));
    if outcome.expected() {
        user.set_success(&mut goose.request)?;
    } else {
        mark_failed(user, outcome.name(), &mut goose.request)?;
    }
    Ok(Answer { outcome, order, retry, retry_after })
}

/// Marks a request failed in goose's metrics. goose answers `set_failure` with
/// `Err(RequestFailed)` whatever happens, so that a transaction can end on it; a buyer
/// goes on after a failed request (a retry, or its next step), so that error is not
/// passed on (it would end the buyer's transaction). Any other error is.
fn mark_failed(user: &mut GooseUser, tag: &str, request: &mut GooseRequestMetric) -> Result<(), Box<TransactionError>> {
    match user.set_failure(tag, request, None, None) {
        Err(err) if matches!(*err, TransactionError::RequestFailed { .. }) => Ok(()),
        other => other,
    }
}
