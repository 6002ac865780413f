//! `POST /user/buy/{product_id}` and the order reads.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::idempotency::{self, Begin};
use super::replays::Replay;
use crate::auth::extract::VerifiedUser;
use crate::auth::session;
use crate::clock::derive_order_id;
use crate::error::{ApiError, ApiResult, redis_unavailable};
use crate::http::extract::{ApiPath, ClientIp};
use crate::ratelimit::{self, Action, Scope};
use crate::redis::scripts::{self, PurchaseArgs, PurchaseOutcome};
use crate::sale::orders::{self, Conflict, OrderDoc, OrderStatus, Persisted, Reservation};
use crate::sale::product_store;
use crate::sale::rebuild::{self, Rebuilt};
use crate::sale::reconciler::publish_completed;
use crate::sale::sold_out::Shortcut;
use crate::state::{App, AppState};

/// Largest number of order ids remembered per sold-out product by the shortcut.
pub const MAX_SOLD_OUT_HOLDERS: usize = 200_000;

/// The answer to a purchase (201 confirmed, 202 pending).
#[derive(Debug, Clone, Serialize)]
pub struct OrderResponse {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub unit: i64,
    pub status: &'static str,
}

/// The outcome of the purchase path, before it becomes HTTP.
#[derive(Debug)]
enum Bought {
    Confirmed(OrderResponse),
    Pending(OrderResponse),
}

pub async fn buy(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(product_id): ApiPath<Uuid>,
    // The whole request, last, so that its headers are borrowed rather than copied.
    request: Request,
) -> ApiResult<Response> {
    let headers = request.headers();
    // After a sell-out the flood is answered here, before any Redis round trip: a
    // session this instance has seen verified gives its user, hence the order id.
    let known = session::id_from_headers(headers).and_then(|id| app.known_sessions.user(id));
    let shortcut_passed = match known {
        Some(user_id) => {
            let key = idempotency::key_from_headers(headers)?;
            let order_id = order_id_of(&app, user_id, &key);
            sold_out_shortcut(&app, order_id, product_id)?;
            Some((user_id, key, order_id))
        }
        None => None,
    };
    let VerifiedUser(user) = VerifiedUser::from_headers(headers, &app).await?;
    // When the session's user is the one this instance remembered, the shortcut's key
    // and order id serve again; otherwise they are read, and the shortcut asked, now.
    let (key, order_id) = match shortcut_passed {
        Some((user_id, key, order_id)) if user_id == user.user_id => (key, order_id),
        _ => {
            let key = idempotency::key_from_headers(headers)?;
            let order_id = order_id_of(&app, user.user_id, &key);
            sold_out_shortcut(&app, order_id, product_id)?;
            (key, order_id)
        }
    };
    // A stored answer this instance wrote or read is final: replayed before the rate
    // limits, which would spend a Redis round trip to refuse what costs none to answer.
    if let Some(replay) = app.replays.get(user.user_id, &key, product_id, app.ids.now_ms()) {
        app.metrics.purchase_outcome("replay");
        app.metrics.replays_from_memory.inc();
        return Ok(replay_response(replay));
    }
    let limits = &app.config.limits;
    // Both limits in one wait: each counts this request whatever the other decides.
    tokio::try_join!(
        ratelimit::check(&app, Action::Purchase, Scope::User(user.user_id), limits.purchase_per_user_per_min),
        ratelimit::check(&app, Action::Purchase, Scope::Ip(ip), limits.purchase_per_ip_per_min),
    )?;

    let claim = match idempotency::begin(&app, user.user_id, &key, product_id, order_id).await {
        Ok(Begin::Proceed(claim)) => claim,
        Ok(Begin::Replay(replay)) => {
            app.metrics.purchase_outcome("replay");
            return Ok(replay_response(replay));
        }
        Err(err) => {
            app.metrics.purchase_outcome(outcome_name(&err));
            return Err(err);
        }
    };
    let mut result = purchase(&app, user.user_id, product_id, order_id).await;
    match &result {
        Ok(Bought::Confirmed(body)) => {
            let bytes = serde_json::to_vec(body).map_err(anyhow::Error::from)?;
            idempotency::finish(&app, &claim, Some((StatusCode::CREATED.as_u16(), &bytes))).await;
        }
        Ok(Bought::Pending(_)) | Err(_) => idempotency::finish(&app, &claim, None).await,
    }
    // A 202's check comes last, after every other store call of the request, so that
    // nothing between it and the answer gives Redis time to lose the reservation.
    if let Ok(Bought::Pending(body)) = &result {
        if let Err(err) = pending_if_still_held(&app, user.user_id, body).await {
            result = Err(err);
        }
    }
    app.metrics.purchase_outcome(match &result {
        Ok(Bought::Confirmed(_)) => "confirmed",
        Ok(Bought::Pending(_)) => "pending",
        Err(err) => outcome_name(err),
    });
    result.map(|bought| match bought {
        Bought::Confirmed(body) => order_created(StatusCode::CREATED, &body),
        Bought::Pending(body) => order_created(StatusCode::ACCEPTED, &body),
    })
}

/// The order an attempt (user, idempotency key) makes: derived, so every retry names it.
fn order_id_of(
    #[cfg_attr(not(feature = "broken"), allow(unused_variables))] app: &App,
    user_id: Uuid,
    key: &str,
) -> Uuid {
    let order_id = derive_order_id(user_id, key);
    #[cfg(feature = "broken")]
    let order_id = crate::broken::order_id(app, order_id);
    order_id
}

/// 409 sold-out if the product is remembered sold out and this attempt (its derived
/// order id) holds none of its units.
fn sold_out_shortcut(app: &App, order_id: Uuid, product_id: Uuid) -> ApiResult<()> {
    if app.sold_out.check(product_id, order_id) == Shortcut::SoldOut {
        app.metrics.sold_out_shortcuts.inc();
        app.metrics.purchase_outcome("sold_out");
        return Err(ApiError::SoldOut);
    }
    Ok(())
}

fn outcome_name(err: &ApiError) -> &'static str {
    match err {
        ApiError::SoldOut => "sold_out",
        ApiError::AlreadyPurchased => "already_purchased",
        ApiError::IdempotencyKeyReused => "key_reused",
        ApiError::IdempotencyInFlight { .. } => "in_flight",
        ApiError::SaleNotStarted => "not_started",
        ApiError::SaleEnded => "ended",
        ApiError::SalePaused { .. } => "paused",
        ApiError::Unavailable { .. } => "unavailable",
        ApiError::NotFound(_) => "not_found",
        _ => "error",
    }
}

fn order_created(status: StatusCode, body: &OrderResponse) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/user/orders/{}", body.order_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn replay_response(replay: Replay) -> Response {
    let status = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::CREATED);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], replay.body).into_response();
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The purchase path proper: reserve in Redis, persist in MongoDB.
async fn purchase(app: &App, user_id: Uuid, product_id: Uuid, order_id: Uuid) -> ApiResult<Bought> {
    let (mut outcome, mut reserved_at_ms) = reserve(app, user_id, product_id, order_id).await?;
    if matches!(outcome, PurchaseOutcome::NotLoaded | PurchaseOutcome::Paused) {
        let product =
            product_store::head(app, product_id).await.map_err(|_| ApiError::Unavailable { retry_after_s: 1 })?;
        product.filter(|p| !p.deleted).ok_or(ApiError::NotFound("product"))?;
        // Only a rebuild pauses a sale: paused with the rebuild lock free means a
        // rebuild was abandoned midway, and this request takes it over.
        let rebuilt = if outcome == PurchaseOutcome::NotLoaded {
            rebuild::ensure_loaded(app, product_id).await
        } else {
            rebuild::rebuild_and_wait(app, product_id).await
        };
        match rebuilt {
            Ok(Rebuilt::Done) => (outcome, reserved_at_ms) = reserve(app, user_id, product_id, order_id).await?,
            Ok(Rebuilt::NoProduct) => return Err(ApiError::NotFound("product")),
            Ok(Rebuilt::InProgress) | Err(_) => return Err(ApiError::SalePaused { retry_after_s: 1 }),
        }
    }
    let (unit, reserved_at_ms, one_per_user) = match outcome {
        PurchaseOutcome::Reserved { unit, one_per_user, .. } => (unit, reserved_at_ms, one_per_user),
        PurchaseOutcome::Replay { unit, confirmed: true, user_id: owner } if owner == user_id.to_string() => {
            return Ok(Bought::Confirmed(response(order_id, product_id, unit, "confirmed")));
        }
        PurchaseOutcome::Replay { unit, confirmed: false, user_id: owner } if owner == user_id.to_string() => {
            let recorded = recorded_reservation(app, product_id, order_id).await;
            (
                unit,
                recorded.map_or_else(|| app.ids.now_ms(), |r| r.reserved_at_ms),
                recorded.and_then(|r| r.one_per_user),
            )
        }
        PurchaseOutcome::Replay { .. } => return Err(ApiError::IdempotencyKeyReused),
        PurchaseOutcome::SoldOut => {
            remember_sold_out(app, product_id).await;
            return Err(ApiError::SoldOut);
        }
        PurchaseOutcome::AlreadyPurchased => return Err(ApiError::AlreadyPurchased),
        PurchaseOutcome::NotStarted => return Err(ApiError::SaleNotStarted),
        PurchaseOutcome::Ended => return Err(ApiError::SaleEnded),
        PurchaseOutcome::Released => return Err(ApiError::OrderReleased { order_id }),
        PurchaseOutcome::NotLoaded | PurchaseOutcome::Paused => return Err(ApiError::SalePaused { retry_after_s: 1 }),
    };
    let reservation = Reservation { order_id, product_id, user_id, unit, reserved_at_ms, one_per_user };
    let _awaiting = app.metrics.awaiting_write();
    persist(app, &reservation).await
}

/// Runs the purchase script; its outcome, and the clock reading it ran with (a new
/// reservation's `reserved_at_ms`, which Redis records and the order document keeps as
/// its `created_at_ms`, whoever writes it: this request, a retry or the reconciler).
async fn reserve(app: &App, user_id: Uuid, product_id: Uuid, order_id: Uuid) -> ApiResult<(PurchaseOutcome, i64)> {
    let channel = app.keys.events_channel();
    let now_ms = app.ids.now_ms();
    let args = PurchaseArgs { order_id, user_id, product_id, now_ms, channel: &channel };
    let mut conn = app.redis.clone();
    #[cfg(feature = "broken")]
    if let Some(broken) = crate::broken::selected(app) {
        let outcome = scripts::purchase_broken(&mut conn, &app.keys.sale(product_id), &args, broken)
            .await
            .map_err(redis_unavailable)?;
        return Ok((outcome, now_ms));
    }
    let outcome = scripts::purchase(&mut conn, &app.keys.sale(product_id), &args).await.map_err(redis_unavailable)?;
    Ok((outcome, now_ms))
}

/// A 202 promises that the reconciler finishes the order, which it can only do while
/// Redis holds the reservation. If Redis lost it while this request was writing (a
/// restart without persistence), nobody would finish it: the outcome is unknown until
/// the client retries with the same key, so the answer is 503, not 202.
async fn pending_if_still_held(app: &App, user_id: Uuid, pending: &OrderResponse) -> ApiResult<()> {
    let OrderResponse { order_id, product_id, unit, .. } = *pending;
    #[cfg(feature = "broken")]
    if !crate::broken::pending_checks_reservation(app) {
        return Ok(());
    }
    let mut conn = app.redis.clone();
    let record: Option<String> = redis::cmd("HGET")
        .arg(app.keys.sale(product_id).orders)
        .arg(order_id.to_string())
        .query_async(&mut conn)
        .await
        .map_err(redis_unavailable)?;
    let held = record
        .and_then(|record| crate::sale::parse_reservation(order_id, product_id, &record))
        .is_some_and(|(held, _)| held.user_id == user_id && held.unit == unit);
    if held {
        Ok(())
    } else {
        tracing::warn!(%order_id, "the reservation vanished from Redis before the order was stored");
        Err(ApiError::Unavailable { retry_after_s: 1 })
    }
}

/// A pending reservation as Redis recorded it: when it was made and under which rule (so
/// a retry writes the same document).
async fn recorded_reservation(app: &App, product_id: Uuid, order_id: Uuid) -> Option<Reservation> {
    let mut conn = app.redis.clone();
    let record: Option<String> = redis::cmd("HGET")
        .arg(app.keys.sale(product_id).orders)
        .arg(order_id.to_string())
        .query_async(&mut conn)
        .await
        .ok()?;
    crate::sale::parse_reservation(order_id, product_id, &record?).map(|(r, _)| r)
}

fn response(order_id: Uuid, product_id: Uuid, unit: i64, status: &'static str) -> OrderResponse {
    OrderResponse { order_id, product_id, unit, status }
}

/// Writes the order to MongoDB within the configured time; 202 pending otherwise.
async fn persist(app: &App, reservation: &Reservation) -> ApiResult<Bought> {
    let Reservation { order_id, product_id, unit, .. } = *reservation;
    #[cfg(feature = "broken")]
    if crate::broken::is(app, crate::broken::Broken::AckBeforeWrite) {
        return ack_before_write(app, reservation).await;
    }
    // The product (for its one-per-user rule) comes from the cache on the hot path; the
    // lookup and the insert share the write timeout.
    let write = async {
        let product = crate::sale::product_cache::load_product(app, product_id)
            .await
            .map_err(|err| anyhow::anyhow!("product lookup: {err}"))?;
        let order = OrderDoc::confirmed(reservation, product.one_per_user);
        #[cfg(feature = "broken")]
        let order = crate::broken::buyer_slot(app, order);
        orders::persist(app, &order).await
    };
    let timeout = Duration::from_millis(app.config.order_write_timeout_ms);
    let persisted = match tokio::time::timeout(timeout, write).await {
        Ok(Ok(persisted)) => persisted,
        // 202, once `buy` checked that Redis still holds the reservation.
        Ok(Err(err)) => {
            tracing::warn!(error = %err, %order_id, "order write failed; answering pending");
            return Ok(Bought::Pending(response(order_id, product_id, unit, "pending")));
        }
        Err(_) => return Ok(Bought::Pending(response(order_id, product_id, unit, "pending"))),
    };
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    match persisted {
        // Its group commit confirmed it in Redis and published its completion.
        Persisted::Inserted { confirmed: true } => {
            Ok(Bought::Confirmed(response(order_id, product_id, unit, "confirmed")))
        }
        Persisted::Inserted { confirmed: false } | Persisted::AlreadyThere => {
            if let Err(err) = scripts::confirm(&mut conn, &keys, order_id).await {
                // MongoDB has the order; the reconciler confirms it in Redis later.
                tracing::warn!(error = %err, %order_id, "confirming in Redis failed");
            }
            if persisted != Persisted::AlreadyThere {
                publish_completed(app, product_id, order_id).await;
            }
            Ok(Bought::Confirmed(response(order_id, product_id, unit, "confirmed")))
        }
        Persisted::Conflict(Conflict::OrderIdTaken(existing)) => {
            let channel = app.keys.events_channel();
            scripts::release(&mut conn, &keys, order_id, &channel, product_id).await.map_err(redis_unavailable)?;
            if existing.product_id == product_id.to_string() && existing.status == OrderStatus::Released {
                Err(ApiError::OrderReleased { order_id })
            } else {
                Err(ApiError::IdempotencyKeyReused)
            }
        }
        Persisted::Conflict(conflict) => {
            tracing::warn!(%order_id, ?conflict, "Redis disagrees with MongoDB; rebuilding the sale state");
            // In its own task: this answer does not wait for it.
            if let Err(err) = app.rebuilds.start(app, product_id, 0) {
                tracing::warn!(error = %err, %product_id, "rebuild not started");
            }
            match conflict {
                Conflict::BuyerHasOrder => Err(ApiError::AlreadyPurchased),
                _ => Err(ApiError::SalePaused { retry_after_s: 1 }),
            }
        }
    }
}

/// [`Broken::AckBeforeWrite`](crate::broken::Broken::AckBeforeWrite): confirmed in Redis
/// and answered 201 before MongoDB has the order, which is written afterwards.
#[cfg(feature = "broken")]
async fn ack_before_write(app: &App, reservation: &Reservation) -> ApiResult<Bought> {
    let Reservation { order_id, product_id, unit, .. } = *reservation;
    let product = crate::sale::product_cache::load_product(app, product_id)
        .await
        .map_err(|_| ApiError::Unavailable { retry_after_s: 1 })?;
    let order = OrderDoc::confirmed(reservation, product.one_per_user);
    let mut conn = app.redis.clone();
    scripts::confirm(&mut conn, &app.keys.sale(product_id), order_id).await.map_err(redis_unavailable)?;
    if let Some(shared) = app.shared() {
        app.spawn(async move {
            let app = shared;
            if let Err(err) = orders::persist(&app, &order).await {
                tracing::warn!(error = %err, %order_id, "order write after the answer failed");
            }
        });
    }
    Ok(Bought::Confirmed(response(order_id, product_id, unit, "confirmed")))
}

/// After a sold-out answer, remembers the product in process with the orders that hold
/// its units, unless a stock event arrived meanwhile.
async fn remember_sold_out(app: &App, product_id: Uuid) {
    // Without a live subscription a release or restock would go unseen: the shortcut
    // is only as fresh as the events that invalidate it.
    if !app.events.is_subscribed() {
        return;
    }
    let epoch = app.sold_out.epoch();
    let mut conn = app.redis.clone();
    let holders: redis::RedisResult<Vec<String>> =
        redis::cmd("HKEYS").arg(app.keys.sale(product_id).orders).query_async(&mut conn).await;
    let Ok(holders) = holders else { return };
    if holders.len() > MAX_SOLD_OUT_HOLDERS {
        return;
    }
    let holders: HashSet<Uuid> = holders.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect();
    app.sold_out.remember_if_unchanged(product_id, holders, epoch);
}

/// One order as the API shows it.
#[derive(Debug, Serialize)]
pub struct OrderView {
    pub order_id: String,
    pub product_id: String,
    pub unit: Option<i64>,
    pub status: OrderStatus,
    pub created_at_ms: i64,
}

impl From<OrderDoc> for OrderView {
    fn from(order: OrderDoc) -> Self {
        let unit = order.unit_number();
        Self {
            order_id: order.id,
            product_id: order.product_id,
            unit,
            status: order.status,
            created_at_ms: order.created_at_ms,
        }
    }
}

pub async fn list_orders(
    State(app): State<AppState>,
    VerifiedUser(user): VerifiedUser,
) -> ApiResult<axum::Json<Vec<OrderView>>> {
    let orders = orders::orders_of_user(&app, user.user_id).await?;
    Ok(axum::Json(orders.into_iter().map(OrderView::from).collect()))
}

pub async fn get_order(
    State(app): State<AppState>,
    VerifiedUser(user): VerifiedUser,
    ApiPath(order_id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<OrderView>> {
    let order = orders::find_order(&app, order_id).await?;
    match order {
        Some(order) if order.user_id == user.user_id.to_string() && order.status == OrderStatus::Confirmed => {
            Ok(axum::Json(order.into()))
        }
        _ => Err(ApiError::NotFound("order")),
    }
}
