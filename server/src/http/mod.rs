//! HTTP plumbing shared by every domain: extractors whose rejections are problem+json,
//! the operational endpoints, the middleware stack, and the accept loop with its
//! connection bounds, the per-client places both connections and event streams are
//! counted in; and the client side of the operational endpoints, the probe of
//! `flashsale healthcheck`.

pub mod connections;
pub mod extract;
pub mod healthcheck;
pub mod middleware;
pub mod ops;
pub mod slots;

use axum::Router;
use axum::routing::MethodRouter;

use crate::state::AppState;

/// Where the API's routes live.
pub const API_PREFIX: &str = "/api/v1";

/// The API's routes, each registered with its whole path (`/api/v1/...`). Not a nested
/// router: axum strips a nested router's prefix from every request's URI, a new URI built
/// per request on the path every buyer of a sale takes.
#[derive(Default)]
pub struct ApiRoutes {
    router: Router<AppState>,
}

impl ApiRoutes {
    /// Adds `method` at `path` (relative to [`API_PREFIX`], starting with `/`).
    #[must_use]
    pub fn route(self, path: &str, method: MethodRouter<AppState>) -> Self {
        Self { router: self.router.route(&[API_PREFIX, path].concat(), method) }
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
