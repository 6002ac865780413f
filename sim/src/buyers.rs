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

use crate::history::{OpKind, Outcome, Recorder};
use crate::plan::{Behaviour, BuyerPlan};
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
}

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
        ip: format!("10.{}.{}.{}", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff),
        buyer,
    };
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

impl Outcome {
    /// Whether the buyer stops retrying this key: an order, or a definite refusal that
    /// a retry cannot change.
    fn settles(&self) -> bool {
        match self {
            Outcome::Ok { status, .. } => *status == 201,
            Outcome::Fail { problem, .. } => matches!(
                problem.as_str(),
                "sold-out" | "already-purchased" | "sale-ended" | "idempotency-key-reused" | "order-released"
            ),
            _ => false,
        }
    }
}

impl Ctx<'_> {
    fn new_key(&mut self) -> String {
        self.keys_made += 1;
        if self.buyer.plan.shared_keys {
            format!("k{}", self.keys_made)
        } else {
            format!("b{}-k{}", self.buyer.plan.index, self.keys_made)
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
