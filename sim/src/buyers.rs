//! Virtual buyers: each one a task that plays its planned behaviour against the server
//! instances (over real HTTP, or into their routers in process: [`crate::transport`]),
//! and records every request in the history.
//!
//! A buyer's keys are named from the plan (`b<buyer>-k<n>`), and its jitter comes from
//! a ChaCha stream seeded by the run's seed and its index, so what each buyer *tries*
//! is replayable; what the server answers depends on timing and is what the run checks.

use std::sync::Arc;
use std::time::Duration;

use flashsale::auth::session::COOKIE_NAME;
use flashsale::state::AppState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use uuid::Uuid;

use crate::history::{ADMIN, OpKind, Outcome, Recorder};
use crate::plan::{Behaviour, BuyerPlan, ChangePlan, ProductChange, RestockPlan};
use crate::transport::{Answer, Lost, Method, SimRequest, Transport};

/// Timeout of one request: past it the outcome is unknown (`info`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts one buyer makes on one key before giving up.
const MAX_ATTEMPTS: u32 = 12;
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(1_500);
/// First pause between two attempts.
const FIRST_BACKOFF_MS: u64 = 80;
/// Requests an impatient buyer fires at once.
const STORM_SIZE: usize = 6;
/// Requests a bot fires back to back.
const BOT_REQUESTS: usize = 40;
/// Percent of buyers that, once they have an order, ask again with the same key.
const ASK_AGAIN_PERCENT: u32 = 20;
/// Percent of buyers that read the product before buying.
const READ_FIRST_PERCENT: u32 = 30;

/// What every buyer shares.
pub struct Shared {
    pub transport: Transport,
    pub recorder: Arc<Recorder>,
    pub product_ids: Vec<Uuid>,
    /// The simulator's own app, to log a buyer in again through the server's code when
    /// a Redis data loss took its session.
    pub admin: AppState,
    pub seed: u64,
    /// Buyers stop starting new attempts after this (ms from the opening).
    pub deadline_ms: u64,
    /// The administrator who cancels orders, and its session (renewed when a Redis data
    /// loss took it).
    pub admin_user: Uuid,
    pub admin_session: std::sync::Mutex<String>,
    /// Cancellations that got no definite answer before the run's deadline: sent again
    /// once every fault healed ([`finish_cancellations`]), as an administrator retries a
    /// refund that failed.
    pub unfinished_cancellations: std::sync::Mutex<Vec<Cancellation>>,
}

/// One administrator's cancellation of a buyer's order.
#[derive(Debug, Clone, Copy)]
pub struct Cancellation {
    pub buyer: usize,
    pub product: usize,
    pub order_id: Uuid,
}

/// How a cancellation request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelEnd {
    /// 200: released (now or before).
    Released,
    /// A definite refusal (404: no such order).
    Refused,
    /// No definite answer.
    Unknown,
}

/// Attempts of one cancellation after the faults healed (about a minute with backoff:
/// longer than a rebuild lock's lease).
const CANCEL_ATTEMPTS_AFTER_HEALING: u32 = 45;
/// Instance-independent address the administrator's requests come from.
const ADMIN_IP: &str = "10.255.255.254";
/// Longest wait, after the cancellation and the buyer's first questions, before the
/// buyer's stale client retries its old key once more.
const STALE_RETRY_MAX_MS: u64 = 6_000;
/// How long a refunded buyer takes to read the notice before asking again.
const REFUND_READING_MS: std::ops::RangeInclusive<u64> = 1..=300;

/// One buyer and its session.
pub struct Buyer {
    pub plan: BuyerPlan,
    pub user_id: Uuid,
    pub session: String,
}

#[derive(Deserialize)]
struct OrderBody {
    order_id: Uuid,
    unit: i64,
}

#[derive(Deserialize)]
struct ProblemBody {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ProductBody {
    remaining: Option<i64>,
}

struct Ctx<'a> {
    shared: &'a Shared,
    buyer: Buyer,
    instance: usize,
    rng: ChaCha8Rng,
    keys_made: u32,
    ip: String,
    /// `k` for the buyer's own keys, `r` for the keys of its second device (a refunded
    /// buyer buying again), so the two never name the same key.
    key_letter: char,
}

/// Plays one buyer to the end of its behaviour.
pub async fn play(shared: Arc<Shared>, buyer: Buyer) {
    let start = buyer.plan.start_at_ms;
    let now = shared.recorder.now_ms();
    if start > now {
        tokio::time::sleep(Duration::from_millis(start - now)).await;
    }
    let index = buyer.plan.index;
    let mut ctx = Ctx {
        shared: &shared,
        instance: buyer.plan.instance,
        rng: ChaCha8Rng::seed_from_u64(shared.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        keys_made: 0,
        ip: buyer_ip(index),
        key_letter: 'k',
        buyer,
    };
    let refund = ctx.buyer.plan.cancelled_after_ms.map(|after_ms| {
        let (plan, user_id) = (ctx.buyer.plan.clone(), ctx.buyer.user_id);
        refund(shared.clone(), plan, user_id, start + after_ms)
    });
    match refund {
        Some(refund) => {
            tokio::join!(ctx.behave(), refund);
        }
        None => ctx.behave().await,
    }
}

fn buyer_ip(index: usize) -> String {
    format!("10.{}.{}.{}", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff)
}

/// The key string of a buyer's first key (see [`Ctx::new_key`]).
pub fn first_key(plan: &BuyerPlan) -> String {
    if plan.shared_keys { "k1".to_owned() } else { format!("b{}-k1", plan.index) }
}

/// At `at_ms`, an administrator cancels the order of the buyer's first key. Once it is
/// released the buyer, from a second device, asks again with that key (the answer must
/// not be a fresh order), buys again with a new key (its buyer slot is free), and a while
/// later its stale first device retries the old key once more.
async fn refund(shared: Arc<Shared>, plan: BuyerPlan, user_id: Uuid, at_ms: u64) {
    let now = shared.recorder.now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
    let key = first_key(&plan);
    let cancellation = Cancellation {
        buyer: plan.index,
        product: plan.product,
        order_id: flashsale::clock::derive_order_id(user_id, &key),
    };
    let mut rng =
        ChaCha8Rng::seed_from_u64(shared.seed ^ (plan.index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0xCA7C);
    let mut end = CancelEnd::Unknown;
    for attempt in 0..MAX_ATTEMPTS {
        if shared.recorder.now_ms() >= shared.deadline_ms {
            break;
        }
        end = cancel_once(&shared, cancellation, plan.instance + attempt as usize).await;
        if end != CancelEnd::Unknown {
            break;
        }
        let base = FIRST_BACKOFF_MS.saturating_mul(1 << attempt.min(5));
        tokio::time::sleep(Duration::from_millis(base + rng.random_range(0..=base)).min(MAX_BACKOFF)).await;
    }
    match end {
        CancelEnd::Released => {}
        CancelEnd::Refused => return,
        CancelEnd::Unknown => {
            shared
                .unfinished_cancellations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(cancellation);
            return;
        }
    }
    let Ok(session) = flashsale::auth::session::create_verified_session(&shared.admin, user_id).await else { return };
    let mut device = Ctx {
        shared: &shared,
        instance: plan.instance,
        rng,
        keys_made: 0,
        ip: buyer_ip(plan.index),
        key_letter: 'r',
        buyer: Buyer { plan: plan.clone(), user_id, session },
    };
    // The buyer reads the refund notice, then asks again.
    let reading = device.rng.random_range(REFUND_READING_MS);
    tokio::time::sleep(Duration::from_millis(reading)).await;
    device.attempt(plan.product, &key).await;
    let again = device.new_key();
    device.pursue(plan.product, &again).await;
    let pause = device.rng.random_range(0..=STALE_RETRY_MAX_MS);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    if !device.past_deadline() {
        // The stale client's connection went through another instance of the pool
        // (which never saw this key's answer).
        device.instance = plan.instance + 1;
        device.attempt(plan.product, &key).await;
    }
}

/// Starts the administrator's planned restocks, one task each, and the planned changes,
/// one task per product (a product's changes come in their order). An administrator's
/// actions reach the instances in turn, as through a round-robin load balancer: the
/// `n`th action of a product goes to instance `product + n` first, so consecutive
/// changes of one product are made on different instances.
pub fn spawn_admin(shared: &Arc<Shared>, plan: &crate::plan::Plan) -> Vec<tokio::task::JoinHandle<()>> {
    let restocks = plan
        .products
        .iter()
        .flat_map(|product| {
            product.restocks.iter().enumerate().map(move |(n, restock)| (product.index, product.index + n, *restock))
        })
        .map(|(product, first, planned)| tokio::spawn(restock(shared.clone(), product, first, planned)));
    let changes = plan.products.iter().filter(|product| !product.changes.is_empty()).map(|product| {
        let (shared, index, changes) = (shared.clone(), product.index, product.changes.clone());
        tokio::spawn(async move {
            for (n, planned) in changes.into_iter().enumerate() {
                change(&shared, index, index + n, planned).await;
            }
        })
    });
    restocks.chain(changes).collect()
}

/// Sleeps until `at_ms` of the run.
async fn sleep_until_ms(shared: &Shared, at_ms: u64) {
    let now = shared.recorder.now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// A request of the administrator's.
fn admin_request(shared: &Shared, method: Method, path: String, body: Option<serde_json::Value>) -> SimRequest {
    let session = shared.admin_session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let mut headers = vec![("cookie", format!("{COOKIE_NAME}={session}")), ("x-forwarded-for", ADMIN_IP.to_owned())];
    if body.is_some() {
        headers.push(("content-type", "application/json".to_owned()));
    }
    SimRequest {
        method,
        path,
        headers,
        body: body.map(|body| bytes::Bytes::from(body.to_string())).unwrap_or_default(),
    }
}

/// Sends an administrator's request to the instances in turn from instance `first`
/// (modulo their number), each attempt recorded as `kind` with the outcome `read` makes
/// of its answer, until `again` says an outcome needs no resend, the attempts run out or
/// the sale ends. A 401 renews the session.
async fn send_as_admin(
    shared: &Shared,
    first: usize,
    kind: OpKind,
    (method, path, body): (Method, String, Option<serde_json::Value>),
    read: impl Fn(Result<Answer, Lost>) -> Outcome,
    again: impl Fn(&Outcome) -> bool,
) {
    for attempt in 0..MAX_ATTEMPTS {
        if shared.recorder.now_ms() >= shared.deadline_ms {
            return;
        }
        let transport = &shared.transport;
        let invoke_ms = shared.recorder.now_ms();
        let Some(instance) = next_up(transport, (first + attempt as usize) % transport.instance_count().max(1)) else {
            let outcome = Outcome::Fail { status: 0, problem: "no-instance".into() };
            shared.recorder.record(ADMIN, 0, kind.clone(), invoke_ms, outcome);
            tokio::time::sleep(Duration::from_millis(FIRST_BACKOFF_MS)).await;
            continue;
        };
        let request = admin_request(shared, method, path.clone(), body.clone());
        let outcome = read(transport.send(instance, request).await);
        let resend = again(&outcome);
        if matches!(outcome, Outcome::Fail { status: 401, .. }) {
            renew_admin_session(shared).await;
        }
        shared.recorder.record(ADMIN, instance, kind.clone(), invoke_ms, outcome);
        if !resend {
            return;
        }
        let base = FIRST_BACKOFF_MS.saturating_mul(1 << attempt.min(5));
        tokio::time::sleep(Duration::from_millis(base).min(MAX_BACKOFF)).await;
    }
}

/// At its planned moment, an administrator changes a product, and sends the change
/// again until an answer says whether it was applied (a change is idempotent: a close
/// names the same end every time), or the sale ends.
pub async fn change(shared: &Shared, product: usize, first: usize, planned: ChangePlan) {
    sleep_until_ms(shared, planned.at_ms).await;
    let Some(product_id) = shared.product_ids.get(product).copied() else { return };
    let path = format!("/api/v1/products/{product_id}");
    let request = match planned.change {
        ProductChange::OnePerUser { on } => (Method::Put, path, Some(serde_json::json!({ "one_per_user": on }))),
        ProductChange::Close => {
            (Method::Put, path, Some(serde_json::json!({ "sale_ends_at_ms": shared.admin.ids.now_ms() })))
        }
        ProductChange::Reopen => (Method::Put, path, Some(serde_json::json!({ "sale_ends_at_ms": null }))),
        ProductChange::Delete => (Method::Delete, path, None),
    };
    let read = |answer| match answer {
        Ok(Answer { status: 200 | 204, .. }) => Outcome::Changed,
        other => classify(other),
    };
    let settled =
        |outcome: &Outcome| matches!(outcome, Outcome::Changed | Outcome::Fail { status: 404 | 409 | 422, .. });
    let kind = OpKind::Change { product, change: planned.change };
    send_as_admin(shared, first, kind, request, read, |o| !settled(o)).await;
}

/// At its planned moment, an administrator restocks a product. Sent again only after
/// an answer that says it was not applied (refused before it reached the server, an
/// expired session, a rate limit): a restock is not idempotent, so a timeout or a 5xx,
/// whose restock may have been applied, ends it.
pub async fn restock(shared: Arc<Shared>, product: usize, first: usize, restock: RestockPlan) {
    sleep_until_ms(&shared, restock.at_ms).await;
    let Some(product_id) = shared.product_ids.get(product).copied() else { return };
    let path = format!("/api/v1/products/{product_id}/restock");
    let request = (Method::Post, path, Some(serde_json::json!({ "quantity": restock.quantity })));
    let read = |answer| match answer {
        Ok(Answer { status: 200, body, .. }) => match serde_json::from_slice::<RestockedBody>(&body) {
            Ok(restocked) => Outcome::Restocked { stock_total: restocked.stock_total },
            Err(_) => Outcome::Info { status: 200, reason: "unreadable-product".into() },
        },
        other => classify(other),
    };
    let again = |outcome: &Outcome| matches!(outcome, Outcome::Fail { status: 0 | 401 | 429, .. });
    send_as_admin(&shared, first, OpKind::Restock { product, quantity: restock.quantity }, request, read, again).await;
}

/// The part of a product view a restock's answer is read for.
#[derive(Deserialize)]
struct RestockedBody {
    stock_total: i64,
}

/// A new verified session for the administrator, after a 401 (Redis lost its sessions).
async fn renew_admin_session(shared: &Shared) {
    if let Ok(session) = flashsale::auth::session::create_verified_session(&shared.admin, shared.admin_user).await {
        *shared.admin_session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = session;
    }
}

/// One cancellation request, recorded.
async fn cancel_once(shared: &Shared, cancellation: Cancellation, instance: usize) -> CancelEnd {
    let transport = &shared.transport;
    let kind = OpKind::Cancel { product: cancellation.product, order_id: cancellation.order_id };
    let invoke_ms = shared.recorder.now_ms();
    let Some(instance) = next_up(transport, instance % transport.instance_count().max(1)) else {
        let outcome = Outcome::Fail { status: 0, problem: "no-instance".into() };
        shared.recorder.record(cancellation.buyer, 0, kind, invoke_ms, outcome);
        return CancelEnd::Unknown;
    };
    let request =
        admin_request(shared, Method::Post, format!("/api/v1/admin/orders/{}/cancel", cancellation.order_id), None);
    let answer = transport.send(instance, request).await;
    let outcome = match answer {
        Ok(Answer { status: 200, .. }) => Outcome::Cancelled,
        other => classify(other),
    };
    let end = match &outcome {
        Outcome::Cancelled => CancelEnd::Released,
        Outcome::Fail { status: 404, .. } => CancelEnd::Refused,
        Outcome::Fail { status: 401, .. } => {
            renew_admin_session(shared).await;
            CancelEnd::Unknown
        }
        _ => CancelEnd::Unknown,
    };
    shared.recorder.record(cancellation.buyer, instance, kind, invoke_ms, outcome);
    end
}

/// Sends again, once every fault healed, each cancellation that got no definite answer
/// during the sale; returns how many still got none.
pub async fn finish_cancellations(shared: &Shared) -> usize {
    let unfinished =
        std::mem::take(&mut *shared.unfinished_cancellations.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let mut left = 0;
    for cancellation in unfinished {
        let mut end = CancelEnd::Unknown;
        for attempt in 0..CANCEL_ATTEMPTS_AFTER_HEALING {
            end = cancel_once(shared, cancellation, attempt as usize).await;
            if end != CancelEnd::Unknown {
                break;
            }
            // A rebuild lock left by a killed instance keeps the sale paused for its
            // whole lease: wait it out as an administrator would, with backoff.
            let pause = FIRST_BACKOFF_MS.saturating_mul(1 << attempt.min(5));
            tokio::time::sleep(Duration::from_millis(pause).min(MAX_BACKOFF)).await;
        }
        if end == CancelEnd::Unknown {
            left += 1;
        }
    }
    left
}

/// How long after a key's last answer its buyer comes back to ask again
/// ([`ask_again`]): past the server's idempotency lease, so that a correct server
/// evaluates the key again instead of refusing it as in flight.
const ASK_AGAIN_AFTER_MS: u64 = crate::checker::IDEMPOTENCY_LEASE_MS + 1_000;

/// Attempts of one key asked again, stopping at a settled answer.
const ASK_AGAIN_ATTEMPTS: u32 = 8;

/// A key its buyer never learned the end of: no attempt settled it (a 201 or a
/// definite refusal), and one may have been acted on (an unknown outcome, a 202
/// pending, an in-flight refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsettledKey {
    pub buyer: usize,
    /// The product of the key's last attempt.
    pub product: usize,
    pub key: String,
    /// When its last attempt was answered (or given up), ms from the opening.
    pub last_answer_ms: u64,
}

/// The keys of `history` whose buyers never learned how they ended, by buyer and key.
pub fn unsettled_keys(history: &crate::history::History) -> Vec<UnsettledKey> {
    let mut keys: std::collections::BTreeMap<(usize, &str), (bool, bool, usize, u64)> = Default::default();
    for op in &history.ops {
        let OpKind::Buy { product, key } = &op.kind else { continue };
        let entry = keys.entry((op.buyer, key.as_str())).or_insert((false, false, *product, 0));
        entry.0 |= op.outcome.settles();
        entry.1 |= match &op.outcome {
            Outcome::Info { .. } => true,
            Outcome::Ok { status, .. } => *status == 202,
            Outcome::Fail { problem, .. } => problem == "idempotency-in-flight",
            _ => false,
        };
        if op.complete_ms >= entry.3 {
            (entry.2, entry.3) = (*product, op.complete_ms);
        }
    }
    keys.into_iter()
        .filter(|(_, (settled, maybe_acted, _, _))| !settled && *maybe_acted)
        .map(|((buyer, key), (_, _, product, last_answer_ms))| UnsettledKey {
            buyer,
            product,
            key: key.to_owned(),
            last_answer_ms,
        })
        .collect()
}

/// Once every fault healed and the reconciler drained, each buyer left without a
/// settled answer comes back and asks again with the same key, as a client that
/// lost the answer does later: a pending order must be there by now, and a key must
/// not stay refused as in flight once the request that claimed it is long over.
/// Every attempt goes into the history like any other.
pub async fn ask_again(shared: &Shared, buyers: &[BuyerPlan], user_ids: &[Uuid], keys: Vec<UnsettledKey>) {
    let asks = keys.into_iter().filter_map(|unsettled| {
        let plan = buyers.get(unsettled.buyer)?.clone();
        let user_id = *user_ids.get(unsettled.buyer)?;
        Some(async move {
            let now = shared.recorder.now_ms();
            let at = unsettled.last_answer_ms + ASK_AGAIN_AFTER_MS;
            if at > now {
                tokio::time::sleep(Duration::from_millis(at - now)).await;
            }
            let Ok(session) = flashsale::auth::session::create_verified_session(&shared.admin, user_id).await else {
                return;
            };
            let index = plan.index;
            let mut ctx = Ctx {
                shared,
                instance: plan.instance,
                rng: ChaCha8Rng::seed_from_u64(shared.seed ^ !(index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                keys_made: 0,
                ip: buyer_ip(index),
                key_letter: 'k',
                buyer: Buyer { plan, user_id, session },
            };
            for attempt in 0..ASK_AGAIN_ATTEMPTS {
                let outcome = ctx.attempt(unsettled.product, &unsettled.key).await;
                if outcome.settles() {
                    break;
                }
                ctx.backoff(attempt, &outcome).await;
            }
        })
    });
    futures::future::join_all(asks).await;
}

impl Ctx<'_> {
    /// Plays the buyer's planned behaviour.
    async fn behave(&mut self) {
        let ctx = self;
        let product = ctx.buyer.plan.product;
        if ctx.rng.random_range(0..100) < READ_FIRST_PERCENT {
            ctx.read(product).await;
        }
        match ctx.buyer.plan.behaviour {
            Behaviour::WellBehaved | Behaviour::LateBuyer => {
                let key = ctx.new_key();
                ctx.pursue(product, &key).await;
            }
            Behaviour::DoubleClicker => {
                let key = ctx.new_key();
                let (a, b) = tokio::join!(ctx.attempt_detached(product, &key), ctx.attempt_detached(product, &key));
                if !(a.settles() || b.settles()) {
                    ctx.pursue(product, &key).await;
                } else {
                    // A settled answer; ask once more with the same key, as a client that
                    // lost the first response would: the server must replay it.
                    ctx.attempt(product, &key).await;
                }
            }
            Behaviour::Impatient => {
                let key = ctx.new_key();
                let storm: Vec<_> = (0..STORM_SIZE).map(|_| ctx.attempt_detached(product, &key)).collect();
                futures::future::join_all(storm).await;
                ctx.pursue(product, &key).await;
            }
            Behaviour::Careless => {
                // A new key for every attempt; once bought, one more try with yet another key.
                for _ in 0..MAX_ATTEMPTS {
                    if ctx.past_deadline() {
                        break;
                    }
                    let key = ctx.new_key();
                    let outcome = ctx.attempt(product, &key).await;
                    if outcome.settles() {
                        if matches!(outcome, Outcome::Ok { .. }) {
                            let again = ctx.new_key();
                            ctx.attempt(product, &again).await;
                        }
                        break;
                    }
                    ctx.backoff(0, &outcome).await;
                }
            }
            Behaviour::KeyReuser => {
                let key = ctx.new_key();
                ctx.pursue(product, &key).await;
                let other = (product + 1) % ctx.shared.product_ids.len();
                if other != product {
                    ctx.attempt(other, &key).await;
                }
            }
            Behaviour::Bot => {
                for _ in 0..BOT_REQUESTS {
                    if ctx.past_deadline() {
                        break;
                    }
                    let key = ctx.new_key();
                    ctx.attempt(product, &key).await;
                }
            }
        }
    }
}

impl Outcome {
    /// Whether the buyer stops retrying this key: an order, or a definite refusal that
    /// a retry cannot change.
    fn settles(&self) -> bool {
        match self {
            Outcome::Ok { status, .. } => *status == 201,
            Outcome::Fail { problem, .. } => matches!(
                problem.as_str(),
                "sold-out"
                    | "already-purchased"
                    | "sale-ended"
                    | "idempotency-key-reused"
                    | "order-released"
                    | "not-found"
            ),
            _ => false,
        }
    }
}

impl Ctx<'_> {
    fn new_key(&mut self) -> String {
        self.keys_made += 1;
        let letter = self.key_letter;
        if self.buyer.plan.shared_keys {
            format!("{letter}{}", self.keys_made)
        } else {
            format!("b{}-{letter}{}", self.buyer.plan.index, self.keys_made)
        }
    }

    fn past_deadline(&self) -> bool {
        self.shared.recorder.now_ms() >= self.shared.deadline_ms
    }

    /// Retries one key until it settles, the attempts run out or the run ends. After an
    /// order, some buyers ask once more with the same key (a client that lost the
    /// answer, or a page refreshed): the server must replay it.
    async fn pursue(&mut self, product: usize, key: &str) {
        for attempt in 0..MAX_ATTEMPTS {
            if self.past_deadline() {
                return;
            }
            let outcome = self.attempt(product, key).await;
            if outcome.settles() {
                if matches!(outcome, Outcome::Ok { .. }) && self.rng.random_range(0..100) < ASK_AGAIN_PERCENT {
                    self.attempt(product, key).await;
                }
                return;
            }
            self.backoff(attempt, &outcome).await;
        }
    }

    async fn backoff(&mut self, attempt: u32, outcome: &Outcome) {
        let base = FIRST_BACKOFF_MS.saturating_mul(1 << attempt.min(5));
        let jitter = self.rng.random_range(0..=base);
        let mut pause = Duration::from_millis(base + jitter).min(MAX_BACKOFF);
        if let Outcome::Fail { status: 429, .. } = outcome {
            pause = pause.max(Duration::from_millis(500));
        }
        tokio::time::sleep(pause).await;
    }

    /// The instance to talk to: the planned one while it is up, else the next one up
    /// (what a load balancer does).
    fn pick_instance(&mut self) -> Option<usize> {
        let index = next_up(&self.shared.transport, self.instance)?;
        self.instance = index;
        Some(index)
    }

    fn cookie(&self) -> String {
        format!("{COOKIE_NAME}={}", self.buyer.session)
    }

    /// One purchase request, without touching the buyer's state (for concurrent clicks).
    fn attempt_detached(&self, product: usize, key: &str) -> impl Future<Output = Outcome> + 'static {
        let transport = self.shared.transport.clone();
        let recorder = self.shared.recorder.clone();
        let target = next_up(&transport, self.instance);
        let product_id = self.shared.product_ids[product];
        let cookie = self.cookie();
        let ip = self.ip.clone();
        let key = key.to_owned();
        let buyer = self.buyer.plan.index;
        async move {
            let invoke_ms = recorder.now_ms();
            let kind = OpKind::Buy { product, key: key.clone() };
            let Some(instance) = target else {
                let outcome = Outcome::Fail { status: 0, problem: "no-instance".into() };
                recorder.record(buyer, 0, kind, invoke_ms, outcome.clone());
                return outcome;
            };
            let request = SimRequest {
                method: Method::Post,
                path: format!("/api/v1/user/buy/{product_id}"),
                headers: vec![("cookie", cookie), ("idempotency-key", key), ("x-forwarded-for", ip)],
                body: bytes::Bytes::new(),
            };
            let outcome = classify(transport.send(instance, request).await);
            recorder.record(buyer, instance, kind, invoke_ms, outcome.clone());
            outcome
        }
    }

    /// One purchase request; a lost session (Redis data loss) is renewed through the
    /// server's code, as the buyer logging in again.
    async fn attempt(&mut self, product: usize, key: &str) -> Outcome {
        self.pick_instance();
        let outcome = self.attempt_detached(product, key).await;
        match &outcome {
            Outcome::Fail { status: 401, .. } => self.log_in_again().await,
            Outcome::Fail { status: 0, .. } => {
                self.instance = (self.instance + 1) % self.shared.transport.instance_count().max(1)
            }
            _ => {}
        }
        outcome
    }

    async fn log_in_again(&mut self) {
        if let Ok(session) =
            flashsale::auth::session::create_verified_session(&self.shared.admin, self.buyer.user_id).await
        {
            self.buyer.session = session;
        }
    }

    async fn read(&mut self, product: usize) {
        let Some(instance) = self.pick_instance() else { return };
        let invoke_ms = self.shared.recorder.now_ms();
        let product_id = self.shared.product_ids[product];
        let request = SimRequest {
            method: Method::Get,
            path: format!("/api/v1/products/{product_id}"),
            headers: vec![("x-forwarded-for", self.ip.clone())],
            body: bytes::Bytes::new(),
        };
        let outcome = match self.shared.transport.send(instance, request).await {
            Ok(Answer { status: 200, body, .. }) => match serde_json::from_slice::<ProductBody>(&body) {
                Ok(ProductBody { remaining: Some(remaining) }) => Outcome::Read { remaining },
                Ok(ProductBody { remaining: None }) => Outcome::Info { status: 200, reason: "no-remaining".into() },
                Err(_) => Outcome::Info { status: 200, reason: "unreadable".into() },
            },
            other => classify(other),
        };
        self.shared.recorder.record(self.buyer.plan.index, instance, OpKind::Read { product }, invoke_ms, outcome);
    }
}

/// The first instance up from `from` on, in turn.
fn next_up(transport: &Transport, from: usize) -> Option<usize> {
    let count = transport.instance_count();
    (0..count).map(|step| (from + step) % count).find(|index| transport.is_up(*index))
}

/// Turns an answer (or its absence) into an outcome.
pub fn classify(answer: Result<Answer, Lost>) -> Outcome {
    let Answer { status, replayed, body } = match answer {
        Ok(answer) => answer,
        // Refused before anything was sent: the server never saw it.
        Err(Lost::ConnectRefused) => return Outcome::Fail { status: 0, problem: "connect-refused".into() },
        Err(Lost::Timeout) => return Outcome::Info { status: 0, reason: "timeout".into() },
        Err(Lost::ConnectionLost) => return Outcome::Info { status: 0, reason: "connection-lost".into() },
        Err(Lost::BodyTimeout(status)) => return Outcome::Info { status, reason: "timeout".into() },
        Err(Lost::BodyLost(status)) => return Outcome::Info { status, reason: "body-lost".into() },
    };
    match status {
        201 | 202 => match serde_json::from_slice::<OrderBody>(&body) {
            Ok(order) => Outcome::Ok { status, order_id: order.order_id, unit: order.unit, replayed },
            Err(_) => Outcome::Info { status, reason: "unreadable-order".into() },
        },
        400..=499 => {
            let problem = serde_json::from_slice::<ProblemBody>(&body)
                .map(|p| p.kind.rsplit('/').next().unwrap_or_default().to_owned())
                .unwrap_or_else(|_| "unreadable-problem".into());
            Outcome::Fail { status, problem }
        }
        // A 5xx may have bought or not: unknown.
        _ => Outcome::Info {
            status,
            reason: serde_json::from_slice::<ProblemBody>(&body)
                .map(|p| p.kind.rsplit('/').next().unwrap_or_default().to_owned())
                .unwrap_or_else(|_| "server-error".into()),
        },
    }
}
