//! The purchase protocol (see `system-design/purchase-protocol.md`): idempotency, the
//! atomic reservation in Redis, the order in MongoDB, the reconciler that finishes
//! pending orders, the rebuild after Redis data loss, the sold-out shortcut and the
//! replays answered from memory.

pub mod cancel;
pub mod handlers;
pub mod idempotency;

pub mod replays;

use axum::routing::{get, post};

use crate::http::ApiRoutes;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route("/user/buy/{product_id}", post(handlers::buy))
        .route("/user/orders", get(handlers::list_orders))
        .route("/user/orders/{order_id}", get(handlers::get_order))
        .route("/admin/orders/{order_id}/cancel", post(cancel::cancel_order))
}
