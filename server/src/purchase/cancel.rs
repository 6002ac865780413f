//! `POST /admin/orders/{order_id}/cancel`: an administrator releases a confirmed order
//! (fraud, refund). MongoDB first: the order becomes a tombstone that keeps its `_id`
//! but holds neither its unit nor its buyer slot, so a late insert of the same order
//! fails instead of overselling. Then Redis gives the unit and the buyer slot back, on a
//! settled sale state: a rebuild in progress may have read MongoDB before the tombstone
//! and would load the order back as held, so the release waits for it (503 if it takes
//! longer than a rebuild wait) and runs again on what it loaded. Both steps are
//! idempotent: a retry after a failure finishes the job.

use axum::extract::State;
use uuid::Uuid;

use super::handlers::OrderView;
use crate::auth::extract::AdminUser;
use crate::error::{ApiError, ApiResult, redis_unavailable};
use crate::http::extract::ApiPath;
use crate::redis::scripts::{self, Released};
use crate::sale::orders::{self, OrderDoc, OrderStatus};
use crate::sale::rebuild::{self, Rebuilt};
use crate::state::{App, AppState};

pub async fn cancel_order(
    State(app): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(order_id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<OrderView>> {
    let order = orders::find_order(&app, order_id).await?.ok_or(ApiError::NotFound("order"))?;
    let product_id = Uuid::parse_str(&order.product_id).map_err(anyhow::Error::from)?;
    let released = match order.status {
        OrderStatus::Confirmed => tombstone_in_mongo(&app, &order).await?,
        OrderStatus::Released => order,
    };
    let mut outcome = release_in_redis(&app, product_id, order_id).await?;
    if !outcome.on_settled_state() {
        // Not loaded, or paused by a rebuild that may have read MongoDB before the
        // tombstone and would load the order back as held: wait for the rebuild (start
        // one if none runs), then release on the state it loaded.
        let rebuilt = if outcome.paused {
            rebuild::rebuild_and_wait(&app, product_id).await
        } else {
            rebuild::ensure_loaded(&app, product_id).await
        };
        match rebuilt {
            Ok(Rebuilt::Done) => {
                outcome = release_in_redis(&app, product_id, order_id).await?;
                if !outcome.on_settled_state() {
                    return Err(ApiError::SalePaused { retry_after_s: 1 });
                }
            }
            // Deleted meanwhile: its sale state is gone for good, nothing holds the order.
            Ok(Rebuilt::NoProduct) => {}
            Ok(Rebuilt::InProgress) | Err(_) => return Err(ApiError::SalePaused { retry_after_s: 1 }),
        }
    }
    tracing::info!(%order_id, %product_id, admin = %admin.user_id, freed = outcome.freed, "order cancelled");
    Ok(axum::Json(released.into()))
}

/// Gives the order's unit and buyer slot back in Redis (idempotent).
async fn release_in_redis(app: &App, product_id: Uuid, order_id: Uuid) -> ApiResult<Released> {
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    scripts::release(&mut conn, &keys, order_id, &app.keys.events_channel(), product_id)
        .await
        .map_err(redis_unavailable)
}

/// Turns a confirmed order into a tombstone (only if it is still confirmed).
async fn tombstone_in_mongo(app: &App, order: &OrderDoc) -> ApiResult<OrderDoc> {
    app.db.release_order(&order.id).await?;
    let current = app.db.find_order(&order.id).await?;
    current.ok_or(ApiError::NotFound("order"))
}
