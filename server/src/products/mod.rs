//! Products: catalogue reads with Redis cache-aside, admin writes, sale windows.

pub mod model;
pub mod store;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
