//! `POST /admin/orders/{order_id}/cancel`: an administrator releases a confirmed order
//! (fraud, refund). MongoDB first: the order becomes a tombstone that keeps its `_id`
//! but holds neither its unit nor its buyer slot, so a late insert of the same order
//! fails instead of overselling. Then Redis gives the unit and the buyer slot back.
//! Both steps are idempotent: a retry after a failure finishes the job.

use axum::extract::State;
use uuid::Uuid;

use super::handlers::OrderView;
use crate::auth::extract::AdminUser;
use crate::error::{ApiError, ApiResult, redis_unavailable};
use crate::http::extract::ApiPath;
use crate::redis::scripts;
use crate::sale::orders::{self, OrderDoc, OrderStatus};
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
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    let outcome = scripts::release(&mut conn, &keys, order_id, &app.keys.events_channel(), product_id)
        .await
        .map_err(redis_unavailable)?;
    tracing::info!(%order_id, %product_id, admin = %admin.user_id, freed = outcome.freed, "order cancelled");
    Ok(axum::Json(released.into()))
}

/// Turns a confirmed order into a tombstone (only if it is still confirmed).
async fn tombstone_in_mongo(app: &App, order: &OrderDoc) -> ApiResult<OrderDoc> {
    app.db.release_order(&order.id).await?;
    let current = app.db.find_order(&order.id).await?;
    current.ok_or(ApiError::NotFound("order"))
}
