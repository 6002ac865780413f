//! The middleware stack: request ids, tracing spans, body limits, panics as problems,
//! per-route metrics, and problem+json for unknown routes and methods.

use std::any::Any;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Response, StatusCode, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::Full;

use crate::error::{ApiError, PROBLEM_JSON};
use crate::metrics::HttpLabels;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Records count and latency per method, route template and status.
pub async fn record_metrics(State(app): State<AppState>, request: Request, next: Next) -> axum::response::Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    app.metrics.http_requests.get_or_create(&labels).inc();
    app.metrics.http_latency_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// A 413 from the body limit layer, as a problem.
pub async fn problem_for_plain_errors(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem || response.status().is_success() {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit_bytes: app.config.max_body_bytes }.into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.into_response(),
        StatusCode::NOT_FOUND => ApiError::RouteNotFound.into_response(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType.into_response(),
        StatusCode::BAD_REQUEST => ApiError::BadRequest("bad request".into()).into_response(),
        _ => response,
    }
}

pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// A panic in a handler becomes an opaque 500 problem (and is logged).
pub fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response<Full<Bytes>> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    let problem = ApiError::Internal(anyhow::anyhow!("panic")).problem();
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(PROBLEM_JSON));
    response
}
