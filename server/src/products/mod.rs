//! Products: catalogue reads with Redis cache-aside, admin writes, sale windows.
//!
//! - [`model`]: the MongoDB record, the API shapes and their bounds.
//! - [`store`]: MongoDB reads and single-document writes.
//! - [`cache`]: cache-aside of records and the first list page (fails open).
//! - [`live`]: live stock from the sale state, on every response, never cached.
//! - [`handlers`]: the routes below.
//!
//! **Invariant:** stock shown to clients comes from `sale`, never from the
//! cache; product writes change the sale state only through `sale`.

pub mod handlers;
pub mod live;
pub mod model;

use axum::routing::{delete, get, post, put};

use crate::http::ApiRoutes;

/// Routes under `/api/v1`, with the seed's paths as aliases (its typos fixed in the
/// README's mapping; the aliases keep old clients working).
pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route("/products", get(handlers::list).post(handlers::create))
        .route("/products/{id}", get(handlers::detail).put(handlers::update).delete(handlers::delete))
        .route("/products/{id}/restock", post(handlers::restock))
        .route("/product", get(handlers::list))
        .route("/product/{id}", get(handlers::detail))
        .route("/user/products", get(handlers::list))
        .route("/product/create-product", post(handlers::create))
        .route("/products/update-product/{id}", put(handlers::update))
        .route("/product/delete-product/{id}", delete(handlers::delete))
}
